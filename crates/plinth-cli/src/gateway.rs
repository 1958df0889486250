//! `plinth gateway`: the inference gateway alone, from a file of deployments (for scale-out and
//! for trying deployments before they are stored on a server). API keys are given on the command
//! line; usage records go to a JSON-lines file when `--usage-log` is set.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use plinth_gateway::{
    ChannelSink, DEFAULT_PORT, Gateway, StaticKeys, UsageRecord, parse_deployments_yaml,
};

use crate::client::{CmdResult, Failure};

const COULD_NOT_RUN: i32 = 2;

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// YAML file of deployments (a list, or documents separated by `---`).
    #[arg(long, short = 'f', required_unless_present = "database_url")]
    pub deployments: Option<PathBuf>,
    /// Instead of a file and `--key`s: the store of a `plinth serve` (postgres://…, for scale-out):
    /// its Deployments, its tokens as API keys, usage and rollbacks written there.
    #[arg(long, conflicts_with_all = ["deployments", "keys", "workers", "usage_log"])]
    pub database_url: Option<String>,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value_t = format!("127.0.0.1:{DEFAULT_PORT}"))]
    pub listen: String,
    /// An API key the gateway accepts, as KEY=TEAM:KEY_ID (repeatable).
    #[arg(long = "key", value_name = "KEY=TEAM:KEY_ID")]
    pub keys: Vec<String>,
    /// Serve with N threads, each with its own runtime, socket and upstream pool (nginx-style);
    /// default: the shared runtime.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Append one JSON line per request (team, key, deployment, version, tokens, latency, cache
    /// hit, fallback) to this file.
    #[arg(long)]
    pub usage_log: Option<PathBuf>,
    /// Export one span per request (GenAI attributes) to this OTLP/HTTP endpoint, e.g.
    /// http://127.0.0.1:4318 (default: the standard OTEL_EXPORTER_OTLP_ENDPOINT /
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// PEM file of CA certificates trusted for https upstreams, besides the system's roots (e.g.
    /// the private CA of in-house model servers).
    #[arg(long, value_name = "PEM")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Share limit windows with every gateway using this Redis,
    /// redis://[[user]:password@]host[:port][/db], instead of counting them in this process
    /// (with --database-url: instead of the store's PostgreSQL).
    #[arg(long, value_name = "URL")]
    pub limits_redis: Option<String>,
    /// With --database-url: run the local replicas of the Deployments whose versions have
    /// `replicas` on this machine, under DIR (each gateway started with it runs its own; their
    /// usage rows go to the store).
    #[arg(long, value_name = "DIR", requires = "database_url")]
    pub replicas_dir: Option<PathBuf>,
}

fn parse_key(v: &str) -> Result<(String, String, String), Failure> {
    let bad = || {
        Failure::new(
            COULD_NOT_RUN,
            format!("--key {v:?}: expected KEY=TEAM:KEY_ID, e.g. sk-test=research:ci"),
        )
    };
    let (key, who) = v.split_once('=').ok_or_else(bad)?;
    let (team, id) = who.split_once(':').ok_or_else(bad)?;
    if key.is_empty() || team.is_empty() || id.is_empty() {
        return Err(bad());
    }
    Ok((key.to_string(), team.to_string(), id.to_string()))
}

fn usage_json(r: &UsageRecord) -> serde_json::Value {
    serde_json::json!({
        "at_unix_ms": r.at_unix_ms,
        "team": r.team,
        "key_id": r.key_id,
        "deployment": r.deployment,
        "served_by": r.served_by,
        "version": r.version,
        "operation": r.operation,
        "model": r.model,
        "status": r.status,
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "cost": r.cost,
        "total_seconds": r.total_seconds,
        "upstream_seconds": r.upstream_seconds,
        "cache_hit": r.cache_hit,
        "fallback_used": r.fallback_used,
        "stream": r.stream,
        "completed": r.completed,
    })
}

pub async fn run(a: GatewayArgs) -> CmdResult {
    // Warnings (e.g. shared limits unreachable) go to stderr; PLINTH_LOG sets the filter.
    let level = std::env::var("PLINTH_LOG").unwrap_or_else(|_| "warn".to_string());
    plinth_server::init_logging(plinth_config::LogFormat::Text, &level);
    let addr: SocketAddr = a.listen.parse().map_err(|e| {
        Failure::new(
            COULD_NOT_RUN,
            format!(
                "--listen {:?}: not an address such as 127.0.0.1:7879: {e}",
                a.listen
            ),
        )
    })?;
    let otlp =
        plinth_gateway::OtlpConfig::resolve(a.otlp_endpoint.as_deref(), |k| std::env::var(k).ok())
            .map_err(|e| Failure::new(COULD_NOT_RUN, e))?;
    let upstream_ca = match &a.upstream_ca_file {
        Some(p) => plinth_gateway::tls::read_ca_file(p)
            .map_err(|e| Failure::new(COULD_NOT_RUN, format!("--upstream-ca-file {e}")))?,
        None => Vec::new(),
    };
    let limits_redis = match &a.limits_redis {
        Some(url) => Some(
            plinth_gateway::limits_redis::RedisUrl::parse(url)
                .map_err(|e| Failure::new(COULD_NOT_RUN, format!("--limits-redis: {e}")))?,
        ),
        None => None,
    };
    if let Some(url) = &a.database_url {
        plinth_server::serve_gateway_alone(
            url,
            addr,
            otlp,
            upstream_ca,
            limits_redis,
            a.replicas_dir.clone(),
            |bound| {
                println!("gateway listening on http://{bound}");
            },
        )
        .await
        .map_err(|e| Failure::new(7, e.to_string()))?;
        return Ok(0);
    }
    let limit_store = match limits_redis {
        Some(url) => Some(
            plinth_server::gateway_redis_limit_store(url, "--limits-redis")
                .await
                .map_err(|e| Failure::new(COULD_NOT_RUN, e))?,
        ),
        None => None,
    };
    let Some(file) = a.deployments.as_ref() else {
        return Err(Failure::new(
            COULD_NOT_RUN,
            "give --deployments FILE or --database-url URL",
        ));
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        Failure::new(
            COULD_NOT_RUN,
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    let specs = parse_deployments_yaml(&text)
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("{}: {e}", file.display())))?;
    if let Some((d, v)) = specs.iter().find_map(|d| {
        d.versions
            .iter()
            .find(|v| v.replicas.is_some())
            .map(|v| (&d.name, &v.name))
    }) {
        return Err(Failure::new(
            COULD_NOT_RUN,
            format!(
                "{}: deployment {d} version {v}: `replicas` are run by `plinth serve`, or by `plinth gateway --database-url URL --replicas-dir DIR`; a gateway on a file of deployments routes to `upstreams` only",
                file.display()
            ),
        ));
    }
    let mut keys = StaticKeys::new();
    for k in &a.keys {
        let (key, team, id) = parse_key(k)?;
        keys = keys.with_key(&key, &team, &id);
    }
    let mut log = match &a.usage_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Failure::new(COULD_NOT_RUN, format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let (sink, mut records) = ChannelSink::new(65_536);
    let sink = Arc::new(sink);
    // Records are written on their own thread so the request path never waits on the disk.
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while let Some(batch) = records.blocking_recv_batch() {
            for r in &batch {
                n += 1;
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{}", usage_json(r));
                }
            }
        }
        n
    });
    let mut builder = Gateway::builder(Arc::new(keys))
        .usage_sink(sink.clone())
        .otlp(otlp)
        .options(plinth_gateway::GatewayOptions {
            upstream_ca_certs: upstream_ca,
            ..Default::default()
        });
    if let Some(store) = limit_store {
        builder = builder.limit_store(store);
    }
    let gw = builder.build();
    gw.set_deployments(specs)
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("{}: {e}", file.display())))?;
    let served = match a.workers {
        Some(n) => tokio::task::spawn_blocking(move || {
            plinth_gateway::serve_workers(addr, gw, n, |bound| {
                println!("gateway listening on http://{bound}");
            })
        })
        .await
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("gateway workers failed: {e}")))?,
        None => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::new(COULD_NOT_RUN, format!("cannot listen on {addr}: {e}"))
            })?;
            let bound = listener
                .local_addr()
                .map_err(|e| Failure::new(COULD_NOT_RUN, e.to_string()))?;
            println!("gateway listening on http://{bound}");
            plinth_gateway::serve(listener, gw, plinth_server::stop_requested()).await
        }
    };
    let dropped = sink.dropped();
    drop(sink);
    let n = tokio::task::spawn_blocking(move || writer.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    eprintln!("gateway stopped: {n} requests metered, {dropped} usage records dropped");
    served.map_err(|e| Failure::new(COULD_NOT_RUN, format!("gateway: {e}")))?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct DemoModelArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Version name the answers carry (`hello from NAME`).
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// Share of requests answered with HTTP 500, 0 to 1 (spread evenly, not random).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Milliseconds to wait before each answer.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Milliseconds to wait before listening at all (a model that takes a while to load).
    #[arg(long, default_value_t = 0)]
    pub startup_delay_ms: u64,
}

impl DemoModelArgs {
    pub fn model(&self) -> Result<plinth_gateway::demo::DemoModel, Failure> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(Failure::new(
                COULD_NOT_RUN,
                format!("--error-rate {}: must be between 0 and 1", self.error_rate),
            ));
        }
        Ok(plinth_gateway::demo::DemoModel {
            name: self.name.clone(),
            error_rate: self.error_rate,
            delay: std::time::Duration::from_millis(self.delay_ms),
        })
    }
}

/// `plinth demo-model-server`: the demo model server (an OpenAI-compatible stand-in that
/// answers `hello from NAME`), for trying deployments and for tests.
pub async fn demo_model_server(a: DemoModelArgs) -> CmdResult {
    let model = a.model()?;
    tokio::time::sleep(std::time::Duration::from_millis(a.startup_delay_ms)).await;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("cannot listen on {}: {e}", a.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(COULD_NOT_RUN, e.to_string()))?;
    println!("demo model server {} listening on http://{bound}", a.name);
    plinth_gateway::demo::serve(listener, model, plinth_server::stop_requested())
        .await
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("demo model server: {e}")))?;
    Ok(0)
}

/// `plinth deployment …`: the gateway's live view of stored Deployments.
#[derive(clap::Subcommand, Debug)]
pub enum DeploymentCmd {
    /// Live split of every deployment (or one): versions with configured and effective weight
    /// and share, and whether the canary was rolled back (with the reason).
    Status {
        name: Option<String>,
        #[command(flatten)]
        conn: crate::Conn,
    },
    /// Per-request usage of a deployment: team, key, version, tokens, latency, cache hit,
    /// fallback; newest first.
    Usage {
        name: String,
        /// Minutes back from now.
        #[arg(long, default_value_t = 60)]
        minutes: u32,
        #[command(flatten)]
        conn: crate::Conn,
    },
}

fn tag(v: &serde_json::Value, k: &str) -> String {
    crate::output::short(&v["tags"][k])
}

/// `ready/desired (min-max)` and the queue, or `-` for a version with external upstreams.
fn replicas_cell(r: &serde_json::Value) -> String {
    if r.is_null() {
        return "-".into();
    }
    let mut s = format!(
        "{}/{} ({}-{})",
        crate::output::short(&r["ready"]),
        crate::output::short(&r["desired"]),
        crate::output::short(&r["min"]),
        crate::output::short(&r["max"]),
    );
    if r["queued"].as_u64().is_some_and(|q| q > 0) {
        s.push_str(&format!(" queued {}", r["queued"]));
    }
    s
}

fn print_deployments(deployments: &[serde_json::Value]) {
    let mut rows = Vec::new();
    for d in deployments {
        let state = if d["serving"] == false {
            format!("not served: {}", crate::output::short(&d["problem"]))
        } else if d["canaryRolledBack"] == true {
            "canary rolled back".to_string()
        } else {
            "serving".to_string()
        };
        for v in d["versions"].as_array().into_iter().flatten() {
            rows.push(vec![
                crate::output::short(&d["name"]),
                crate::output::short(&d["team"]),
                crate::output::short(&v["name"]),
                crate::output::short(&v["role"]),
                crate::output::short(&v["weight"]),
                crate::output::short(&v["effectiveWeight"]),
                format!("{:.1}%", v["share"].as_f64().unwrap_or(0.0) * 100.0),
                replicas_cell(&v["replicas"]),
                state.clone(),
            ]);
        }
        if d["versions"].as_array().is_none_or(Vec::is_empty) {
            rows.push(vec![
                crate::output::short(&d["name"]),
                crate::output::short(&d["team"]),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                state,
            ]);
        }
    }
    crate::output::table(
        &[
            "DEPLOYMENT",
            "TEAM",
            "VERSION",
            "ROLE",
            "WEIGHT",
            "EFFECTIVE",
            "SHARE",
            "REPLICAS",
            "STATE",
        ],
        &rows,
    );
    for d in deployments {
        for v in d["versions"].as_array().into_iter().flatten() {
            let r = &v["replicas"];
            for x in r["replicas"].as_array().into_iter().flatten() {
                println!(
                    "replica {} of {} {}: {} pid {} port {} in flight {}",
                    crate::output::short(&x["id"]),
                    crate::output::short(&d["name"]),
                    crate::output::short(&v["name"]),
                    crate::output::short(&x["state"]),
                    crate::output::short(&x["pid"]),
                    crate::output::short(&x["port"]),
                    crate::output::short(&x["inFlight"]),
                );
            }
            if let Some(p) = r["lastProblem"].as_str() {
                println!(
                    "last replica problem of {} {}: {p}",
                    crate::output::short(&d["name"]),
                    crate::output::short(&v["name"]),
                );
            }
        }
    }
    for d in deployments {
        for r in d["rollbacks"].as_array().into_iter().flatten() {
            println!(
                "rollback of {} {} (generation {}) at {}: {}",
                crate::output::short(&d["name"]),
                crate::output::short(&r["canaryVersion"]),
                crate::output::short(&r["generation"]),
                crate::output::short(&r["at"]),
                crate::output::short(&r["reason"]),
            );
        }
    }
}

pub async fn run_deployment(cmd: DeploymentCmd) -> CmdResult {
    match cmd {
        DeploymentCmd::Status { name, conn } => {
            let client = crate::client::Client::new(&conn);
            let out: serde_json::Value = match &name {
                Some(n) => {
                    client
                        .get(&format!(
                            "/api/v1/deployments/{}/status",
                            crate::client::enc(n)
                        ))
                        .await?
                }
                None => client.get("/api/v1/gateway").await?,
            };
            crate::output::emit(conn.output, &out, |v| {
                if name.is_some() {
                    print_deployments(std::slice::from_ref(v));
                } else {
                    println!("gateway: {}", crate::output::short(&v["url"]));
                    print_deployments(v["deployments"].as_array().map_or(&[], Vec::as_slice));
                }
            });
        }
        DeploymentCmd::Usage {
            name,
            minutes,
            conn,
        } => {
            let client = crate::client::Client::new(&conn);
            let out: Vec<serde_json::Value> = client
                .get(&format!(
                    "/api/v1/deployments/{}/usage?minutes={minutes}",
                    crate::client::enc(&name)
                ))
                .await?;
            crate::output::emit(conn.output, &out, |rows| {
                let rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            crate::output::short(&r["start"]),
                            tag(r, "team"),
                            tag(r, "key"),
                            tag(r, "version"),
                            tag(r, "status"),
                            tag(r, "tokensIn"),
                            tag(r, "tokensOut"),
                            tag(r, "totalSeconds"),
                            tag(r, "cacheHit"),
                            tag(r, "fallbackUsed"),
                        ]
                    })
                    .collect();
                crate::output::table(
                    &[
                        "START", "TEAM", "KEY", "VERSION", "STATUS", "IN", "OUT", "SECONDS",
                        "CACHED", "FALLBACK",
                    ],
                    &rows,
                );
            });
        }
    }
    Ok(0)
}

/// The stable version of `plinth up`'s demo: one local replica (`plinth demo-model-server`
/// started by the server, up to 2 under load) when this program can be found, else the demo
/// model server in this process at `fallback`.
fn demo_stable(fallback: &str) -> serde_json::Value {
    match std::env::current_exe() {
        Ok(exe) => serde_json::json!({
            "name": "v1", "role": "stable", "weight": 80,
            "replicas": {
                "command": [exe.display().to_string(), "demo-model-server", "--listen",
                    "127.0.0.1:{port}", "--name", "v1", "--delay-ms", "15"],
                // Half a core each: two fit team product's queue (1 core on `local`), which
                // admits them through the job scheduler.
                "resources": {"cpus": 0.5},
            },
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "targetConcurrency": 4},
        }),
        Err(_) => {
            serde_json::json!({"name": "v1", "role": "stable", "weight": 80, "upstreams": [fallback]})
        }
    }
}

/// The Deployment `plinth up` applies: a stable demo model and a canary that fails 30 % of its
/// requests, so the canary is rolled back on its own once it has seen enough traffic.
fn demo_deployment(stable: &str, canary: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "plinth/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo-chat", "labels": {"source": "plinth-up"}},
        "spec": {
            "team": "product",
            "models": ["demo-chat"],
            "versions": [
                demo_stable(stable),
                {"name": "v2", "role": "canary", "weight": 20, "upstreams": [canary]},
            ],
            "stickiness": {"from": "user"},
            "cache": {"ttlSeconds": 60, "maxBytes": 1_048_576},
            "limits": [
                {"scope": "key", "windowSeconds": 60, "requests": 6000},
                {"scope": "team", "windowSeconds": 86400, "spend": 50.0},
            ],
            "pricing": {"inputPer1kTokens": 0.5, "outputPer1kTokens": 1.5, "currency": "USD"},
            "canary": {"windowSeconds": 300, "minRequests": 20, "maxErrorRateMargin": 0.1},
        },
    })
}

/// Starts a demo model server in this process on a free loopback port; returns its base URL.
async fn start_demo_model(name: &str, error_rate: f64, delay_ms: u64) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("demo model server {name}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("demo model server {name}: {e}"))?;
    let model = plinth_gateway::demo::DemoModel {
        name: name.to_string(),
        error_rate,
        delay: std::time::Duration::from_millis(delay_ms),
    };
    tokio::spawn(plinth_gateway::demo::serve(
        listener,
        model,
        std::future::pending(),
    ));
    Ok(format!("http://{addr}"))
}

/// `plinth up`'s gateway demo: two demo model servers (stable v1 and a failing canary v2) in
/// this process, the `demo-chat` Deployment in front of them, and traffic through the gateway
/// with `token` (a burst, then one request a second) so the console's deployments page shows a
/// split, charts and the canary's automatic rollback.
pub async fn up_demo(client: &crate::client::Client, gateway: std::net::SocketAddr, token: &str) {
    let (stable, canary) = match (
        start_demo_model("v1", 0.0, 15).await,
        start_demo_model("v2", 0.3, 40).await,
    ) {
        (Ok(s), Ok(c)) => (s, c),
        (Err(e), _) | (_, Err(e)) => {
            println!("plinth: skipped the gateway demo: {e}");
            return;
        }
    };
    let documents = vec![plinth_types::api::SourcedDocument {
        file: Some("plinth up (gateway demo)".into()),
        index: Some(1),
        document: demo_deployment(&stable, &canary),
    }];
    let applied: Result<plinth_types::api::ApplyResponse, _> = client
        .post(
            "/api/v1/apply",
            &plinth_types::api::ApplyRequest {
                documents,
                dry_run: false,
            },
        )
        .await;
    if let Err(e) = applied {
        println!("plinth: skipped the gateway demo: {}", e.message);
        return;
    }
    let url = format!("http://{gateway}/v1");
    println!(
        "plinth: deployment/demo-chat serves model demo-chat at {url} (stable v1 80 % on a local replica, canary v2 20 % on the demo model server at {canary})"
    );
    let token = token.to_string();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        // Until the gateway has read the new Deployment (within a second) requests get 404.
        for i in 0u64.. {
            let body = serde_json::json!({
                "model": "demo-chat",
                "user": format!("user-{}", i % 50),
                "messages": [{"role": "user", "content": format!("hello demo number {}", i % 200)}],
            });
            let _ = http
                .post(format!("{url}/chat/completions"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            let pause = if i < 300 { 30 } else { 1000 };
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn keys_need_team_and_id() {
        assert!(parse_key("sk-1=research:ci").is_ok());
        for bad in [
            "sk-1",
            "sk-1=research",
            "=research:ci",
            "sk-1=:ci",
            "sk-1=research:",
        ] {
            let e = parse_key(bad).err().map(|f| f.message).unwrap_or_default();
            assert!(e.contains("KEY=TEAM:KEY_ID"), "{bad}: {e}");
        }
    }
}
