//! The `plinth` binary: `serve` and `up` run the platform; every other subcommand is a client of
//! its HTTP API. Exit codes: 0 ok, 1 unexpected, 2 usage, 3 invalid input, 4 not allowed
//! (authentication or permission), 5 not found, 6 conflict, 7 server unreachable or unavailable,
//! 8 audit verification found tampering.

mod client;
mod commands;
mod contract;
mod cost;
mod data;
mod dataset;
mod demo_jobs;
mod demo_train;
mod gateway;
mod job;
mod lineage;
mod model;
mod model_gc;
mod output;
mod up;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// mimalloc instead of glibc's malloc: the server's stored writes and the gateway's requests
/// allocate and free many small buffers, and glibc spent about a third of the server's CPU on
/// it under the scheduler benchmark (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "plinth",
    version,
    about = "Plinth: the platform under production AI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is and who we are; shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Server URL (default: the one saved by `plinth login`, else http://127.0.0.1:7878).
    #[arg(long, env = "PLINTH_SERVER", global = true)]
    server: Option<String>,
    /// Bearer token (default: the one saved by `plinth login`).
    #[arg(long, env = "PLINTH_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Output: table for people, json or yaml for scripts.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: API, console and controllers on one port.
    Serve(ServeArgs),
    /// Run the server with the demo workspace applied, and print the console URL and token.
    Up(up::UpArgs),
    /// Run the inference gateway alone (OpenAI-compatible API) from a file of deployments.
    Gateway(gateway::GatewayArgs),
    /// Run the demo model server: an OpenAI-compatible stand-in answering `hello from NAME`
    /// (what `plinth up` puts behind the gateway; for tests and trying deployments).
    DemoModelServer(gateway::DemoModelArgs),
    /// The training job of `plinth up`'s demo: fits a model on a flights dataset version and
    /// logs it through the MLflow API of MLFLOW_TRACKING_URI.
    #[command(hide = true)]
    DemoTrain(demo_train::DemoTrainArgs),
    /// Check a server and token, and save them for later commands.
    Login {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show who the token belongs to.
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
    /// Counts of pools, teams, queues and capacity.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Create or update resources from YAML files or directories (atomic: all or nothing).
    Apply {
        /// A YAML file (several documents allowed) or a directory of them; `-` for stdin.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Show what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List resources of a kind, or show one.
    Get {
        kind: String,
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one resource in full, with its recent audit events.
    Describe {
        kind: String,
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a resource.
    Delete {
        kind: String,
        name: String,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(commands::TokenCmd),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(commands::AuditCmd),
    /// Lint ODCS v3 data contracts and check them against data files (no server needed).
    #[command(subcommand)]
    Contract(contract::ContractCmd),
    /// Profile datasets and measure drift between them (local files; no server needed).
    #[command(subcommand)]
    Data(data::DataCmd),
    /// Dataset versions on the server: register (a path or an upload), list, show, profile,
    /// drift between versions, drift reference, OpenLineage facets.
    #[command(subcommand)]
    Dataset(dataset::DatasetCmd),
    /// Jobs: submit, list, describe (state, attempts, why it waits), logs, cancel.
    #[command(subcommand)]
    Job(job::JobCmd),
    /// Pool operations: simulate a spot interruption of a node.
    #[command(subcommand)]
    Pool(job::PoolCmd),
    /// Deployments behind the inference gateway: live split and rollback state, per-request usage.
    #[command(subcommand)]
    Deployment(gateway::DeploymentCmd),
    /// The lineage graph: a node's upstream and downstream as a tree, a run's OpenLineage events.
    #[command(subcommand)]
    Lineage(lineage::LineageCmd),
    /// Cost: reports by team, model, pool or day; unit economics; FOCUS export; budgets.
    #[command(subcommand)]
    Cost(cost::CostCmd),
    /// Registered models: versions with their typed fields, diff, release gates, promote,
    /// approve, rollback, deprecate.
    #[command(subcommand)]
    Model(model::ModelCmd),
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// YAML config file (also PLINTH_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the embedded store and local state [default: ./plinth-data] (also PLINTH_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address for the API and console [default: 127.0.0.1:7878] (also PLINTH_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// postgres://... to keep state in PostgreSQL instead of SQLite (also PLINTH_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// text or json (also PLINTH_LOG_FORMAT).
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter such as info or plinth=debug (also PLINTH_LOG).
    #[arg(long)]
    log_level: Option<String>,
    /// The largest dataset upload in bytes [default: 1 GiB] (also PLINTH_MAX_UPLOAD_BYTES).
    #[arg(long)]
    max_upload_bytes: Option<u64>,
    /// What runs admitted jobs: local (real processes) or simulated (benchmarks only: each
    /// attempt holds its resources for the job's simulatedRuntime, no process) (also PLINTH_EXECUTOR).
    #[arg(long, value_name = "local|simulated")]
    executor: Option<String>,
    /// Chaos testing: random interruptions per spot node per hour, taken as `plinth pool
    /// interrupt` takes them [default: 0] (also PLINTH_CHAOS_SPOT_INTERRUPT_RATE).
    #[arg(long, value_name = "PER_HOUR")]
    chaos_spot_interrupt_rate: Option<f64>,
    /// Seed of the chaos interruptions [default: from the clock] (also PLINTH_CHAOS_SEED).
    #[arg(long)]
    chaos_seed: Option<u64>,
    /// Address of the inference gateway (OpenAI-compatible API; port 0 picks one) [default:
    /// 127.0.0.1:7879] (also PLINTH_GATEWAY_LISTEN; `off` turns it off).
    #[arg(long, value_name = "ADDR")]
    gateway_listen: Option<String>,
    /// Run without the inference gateway.
    #[arg(long, conflicts_with = "gateway_listen")]
    no_gateway: bool,
    /// Export one span per gateway request (GenAI attributes) to this OTLP/HTTP endpoint, e.g.
    /// http://127.0.0.1:4318 (also the config file's otlp_endpoint, or the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// PEM file of CA certificates the gateway trusts for https upstreams, besides the system's
    /// roots (also PLINTH_GATEWAY_UPSTREAM_CA_FILE).
    #[arg(long, value_name = "PEM")]
    gateway_upstream_ca_file: Option<std::path::PathBuf>,
    /// Share the gateway's limit windows with other gateways through this Redis,
    /// redis://[[user]:password@]host[:port][/db], instead of PostgreSQL or this process (also
    /// PLINTH_GATEWAY_LIMITS_REDIS, or the config file's gateway_limits_redis).
    #[arg(long, value_name = "URL")]
    gateway_limits_redis: Option<String>,
    /// Jobs whose cost estimate (GPUs × maxRuntime × GPU-hour price) is above this amount wait
    /// for a maintainer's approval (also PLINTH_COST_APPROVAL_THRESHOLD, or the config file's
    /// cost.approval_threshold).
    #[arg(long, value_name = "AMOUNT")]
    cost_approval_threshold: Option<f64>,
    /// PEM file of CA certificates trusted for https:// budget webhooks, besides the system's
    /// (also PLINTH_COST_WEBHOOK_CA_FILE, or the config file's cost.webhook_ca_file).
    #[arg(long, value_name = "FILE")]
    cost_webhook_ca_file: Option<PathBuf>,
}

impl ServeArgs {
    pub fn overrides(&self) -> plinth_config::ServerOverrides {
        plinth_config::ServerOverrides {
            config_file: self.config.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
            max_upload_bytes: self.max_upload_bytes,
            executor: self.executor.clone(),
            chaos_spot_interrupt_rate: self.chaos_spot_interrupt_rate,
            chaos_seed: self.chaos_seed,
            gateway_listen: if self.no_gateway {
                Some("off".to_string())
            } else {
                self.gateway_listen.clone()
            },
            otlp_endpoint: self.otlp_endpoint.clone(),
            gateway_upstream_ca_file: self.gateway_upstream_ca_file.clone(),
            gateway_limits_redis: self.gateway_limits_redis.clone(),
            cost_approval_threshold: self.cost_approval_threshold,
            cost_webhook_ca_file: self.cost_webhook_ca_file.clone(),
        }
    }
}

fn main() -> std::process::ExitCode {
    // The supervisor of a job attempt (started by the server's executor): parsed before clap
    // so it stays hidden and starts fast.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "exec-supervisor")
    {
        return plinth_server::exec_supervisor_main(std::env::args_os().skip(2));
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(cli));
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Serve(args) => commands::serve(args).await,
        Command::Up(args) => up::up(args).await,
        Command::Gateway(args) => gateway::run(args).await,
        Command::DemoModelServer(args) => gateway::demo_model_server(args).await,
        Command::DemoTrain(args) => demo_train::run(args).await,
        Command::Login { conn } => commands::login(conn).await,
        Command::Whoami { conn } => commands::whoami(conn).await,
        Command::Status { conn } => commands::status(conn).await,
        Command::Apply {
            files,
            dry_run,
            conn,
        } => commands::apply(conn, files, dry_run).await,
        Command::Get { kind, name, conn } => commands::get(conn, kind, name).await,
        Command::Describe { kind, name, conn } => commands::describe(conn, kind, name).await,
        Command::Delete {
            kind,
            name,
            dry_run,
            conn,
        } => commands::delete(conn, kind, name, dry_run).await,
        Command::Token(cmd) => commands::token(cmd).await,
        Command::Audit(cmd) => commands::audit(cmd).await,
        Command::Contract(cmd) => contract::run(cmd).await,
        Command::Data(cmd) => data::run(cmd).await,
        Command::Dataset(cmd) => dataset::run(cmd).await,
        Command::Job(cmd) => job::run(cmd).await,
        Command::Pool(cmd) => job::run_pool(cmd).await,
        Command::Deployment(cmd) => gateway::run_deployment(cmd).await,
        Command::Lineage(cmd) => lineage::run(cmd).await,
        Command::Cost(cmd) => cost::run(cmd).await,
        Command::Model(cmd) => model::run(cmd).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            for d in &e.details {
                eprintln!("  {d}");
            }
            e.exit_code
        }
    }
}
