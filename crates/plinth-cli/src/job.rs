//! `plinth job`: submit jobs, list them, show one (state, attempts, why it waits), follow
//! its logs, cancel it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use plinth_types::ResourceView;
use plinth_types::job::{Job, JobSpec, SubmitJobRequest};
use plinth_types::spec::WorkloadClass;

use crate::Conn;
use crate::client::{Client, CmdResult, Failure, enc};
use crate::output::{dash, emit, table};

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Submit a job: `plinth job submit --team T [--queue Q] [--gpus N] -- COMMAND ARGS…`, or
    /// `-f job.yaml` (a `kind: Job` document).
    Submit(Box<SubmitArgs>),
    /// List jobs, newest first.
    List {
        #[arg(long)]
        team: Option<String>,
        /// pending, pending_approval, admitted, running, succeeded, failed, cancelled or lost.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a job: state, attempts, why it waits.
    Describe {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a job's log (the latest attempt's, unless --attempt).
    Logs {
        name: String,
        /// Keep printing until the attempt ends.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        #[arg(long)]
        attempt: Option<u32>,
        /// For a gang job (--nodes N): the pod (rank 0..N-1) whose log to print (default 0).
        #[arg(long)]
        pod: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a job (a running one is stopped: SIGTERM, then SIGKILL).
    Cancel {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a job waiting for approval (maintainers of its team or admins; never its
    /// submitter). It then queues like any pending job.
    Approve {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// A YAML file with a `kind: Job` document (apiVersion plinth/v1, metadata.name, spec).
    #[arg(short = 'f', long = "filename", conflicts_with = "command")]
    file: Option<PathBuf>,
    /// Job name (default: made from the command).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// Queue (default: the team's only queue).
    #[arg(long)]
    queue: Option<String>,
    /// training, fine_tuning, inference, batch_inference or rag.
    #[arg(long, default_value = "batch_inference")]
    class: String,
    /// GPUs of the job, or of each node with --nodes.
    #[arg(long, default_value_t = 0.0, visible_alias = "gpus-per-node")]
    gpus: f64,
    /// Run as a gang of this many pods (nodes), each with --gpus-per-node, --cpus and
    /// --memory-gib, admitted all together or not at all (as Slurm's --nodes).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    #[arg(long)]
    gpu_type: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    cpus: f64,
    #[arg(long, default_value_t = 1.0)]
    memory_gib: f64,
    /// May run on spot capacity.
    #[arg(long)]
    spot: bool,
    #[arg(long)]
    checkpoint_dir: Option<String>,
    #[arg(long, default_value_t = 0)]
    max_retries: u32,
    /// e.g. 90s, 30m, 2h.
    #[arg(long)]
    max_runtime: Option<String>,
    /// e.g. 30m.
    #[arg(long)]
    idle_timeout: Option<String>,
    /// Benchmarks only, on a server started with `--executor simulated`: how long each
    /// attempt holds its resources, e.g. 200ms (no process runs).
    #[arg(long)]
    simulated_runtime: Option<String>,
    /// k=v, repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long)]
    priority: Option<i32>,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
    #[command(flatten)]
    conn: Conn,
}

fn invalid(msg: impl Into<String>) -> Failure {
    Failure::new(3, msg)
}

fn from_file(path: &PathBuf) -> Result<SubmitJobRequest, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let doc: serde_json::Value = yaml_serde::from_str(&text)
        .map_err(|e| invalid(format!("{}: not YAML: {e}", path.display())))?;
    let kind = doc.get("kind").and_then(|k| k.as_str());
    if kind != Some("Job") {
        return Err(invalid(format!(
            "{}: kind: expected Job, got {}",
            path.display(),
            kind.unwrap_or("nothing")
        )));
    }
    let name = doc
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let spec = doc
        .get("spec")
        .cloned()
        .ok_or_else(|| invalid(format!("{}: spec: missing", path.display())))?;
    let spec: JobSpec = serde_json::from_value(spec)
        .map_err(|e| invalid(format!("{}: spec: {e}", path.display())))?;
    Ok(SubmitJobRequest { name, spec })
}

async fn default_queue(client: &Client, team: &str) -> Result<String, Failure> {
    let queues: Vec<ResourceView> = client.get("/api/v1/resources/queues").await?;
    let mine: Vec<&ResourceView> = queues
        .iter()
        .filter(|q| q.status.team.as_deref() == Some(team))
        .collect();
    match mine.as_slice() {
        [q] => Ok(q.metadata.name.clone()),
        [] => Err(invalid(format!(
            "team {team} has no queue; create one with `plinth apply`"
        ))),
        _ => Err(invalid(format!(
            "team {team} has {} queues ({}); choose one with --queue",
            mine.len(),
            mine.iter()
                .map(|q| q.metadata.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn request(a: &SubmitArgs, client: &Client) -> Result<SubmitJobRequest, Failure> {
    if let Some(f) = &a.file {
        return from_file(f);
    }
    if a.command.is_empty() {
        return Err(Failure::new(
            2,
            "no command: give one after `--` (plinth job submit --team T -- CMD ARGS…) or use -f FILE",
        ));
    }
    let team = match &a.team {
        Some(t) => t.clone(),
        None => {
            let who: plinth_types::Identity = client.get("/api/v1/whoami").await?;
            who.team
                .ok_or_else(|| invalid("--team is required (the token has no team)"))?
        }
    };
    let queue = match &a.queue {
        Some(q) => q.clone(),
        None => default_queue(client, &team).await?,
    };
    let class: WorkloadClass = serde_json::from_value(serde_json::Value::String(a.class.clone()))
        .map_err(|_| {
        invalid(format!(
            "--class: {:?} is not one of training, fine_tuning, inference, batch_inference, rag",
            a.class
        ))
    })?;
    let mut tags = BTreeMap::new();
    for t in &a.tags {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| invalid(format!("--tag: {t:?} is not key=value")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    Ok(SubmitJobRequest {
        name: a.name.clone(),
        spec: JobSpec {
            command: a.command.clone(),
            team,
            queue,
            class,
            nodes: a.nodes,
            gpus: a.gpus,
            gpu_type: a.gpu_type.clone(),
            cpus: a.cpus,
            memory_gib: a.memory_gib,
            spot: a.spot,
            checkpoint_dir: a.checkpoint_dir.clone(),
            max_retries: a.max_retries,
            max_runtime: a.max_runtime.clone(),
            idle_timeout: a.idle_timeout.clone(),
            simulated_runtime: a.simulated_runtime.clone(),
            tags,
            priority: a.priority,
            env: BTreeMap::new(),
        },
    })
}

fn wait_or_message(j: &Job) -> String {
    j.status
        .wait_reason
        .clone()
        .filter(|_| !j.status.state.is_terminal())
        .or_else(|| j.status.message.clone())
        .unwrap_or_default()
}

fn describe(j: &Job) {
    println!("Name:       {}", j.name);
    println!("Team:       {}", j.spec.team);
    println!("Queue:      {}", j.spec.queue);
    println!("State:      {}", j.status.state.as_str());
    println!("Command:    {}", j.spec.command.join(" "));
    println!(
        "Resources:  {}gpus {}{}, cpus {}, memory {} GiB{}",
        if j.spec.nodes > 1 {
            format!("{} nodes × ", j.spec.nodes)
        } else {
            String::new()
        },
        j.spec.gpus,
        j.spec
            .gpu_type
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default(),
        j.spec.cpus,
        j.spec.memory_gib,
        if j.spec.spot { ", spot" } else { "" }
    );
    println!(
        "Submitted:  {} by {}",
        j.status.submitted_at, j.status.submitted_by
    );
    if let Some(w) = &j.status.wait_reason {
        println!("Waiting:    {w}");
    }
    if let Some(m) = &j.status.message {
        println!("Message:    {m}");
    }
    println!("Attempts:   {}", j.status.attempts.len());
    if !j.status.attempts.is_empty() {
        let rows: Vec<Vec<String>> = j
            .status
            .attempts
            .iter()
            .map(|a| {
                vec![
                    a.n.to_string(),
                    a.started_at.clone(),
                    dash(a.ended_at.as_deref()),
                    if a.pods.is_empty() {
                        format!("{}/{}", a.pool, a.node)
                    } else {
                        let nodes: Vec<&str> = a.pods.iter().map(|p| p.node.as_str()).collect();
                        format!("{}/{}", a.pool, nodes.join(","))
                    },
                    dash(a.reason.as_deref()),
                    dash(a.exit.as_deref()),
                ]
            })
            .collect();
        table(&["N", "STARTED", "ENDED", "NODE", "REASON", "EXIT"], &rows);
    }
}

pub async fn run(cmd: JobCmd) -> CmdResult {
    match cmd {
        JobCmd::Submit(a) => {
            let client = Client::new(&a.conn);
            let req = request(&a, &client).await?;
            let job: Job = client.post("/api/v1/jobs", &req).await?;
            emit(a.conn.output, &job, |j| {
                println!(
                    "job {} submitted to queue {} ({})",
                    j.name,
                    j.spec.queue,
                    j.status.state.as_str()
                );
            });
            Ok(0)
        }
        JobCmd::List { team, state, conn } => {
            let client = Client::new(&conn);
            let mut q = Vec::new();
            if let Some(t) = &team {
                q.push(format!("team={}", enc(t)));
            }
            if let Some(s) = &state {
                q.push(format!("state={}", enc(s)));
            }
            let path = if q.is_empty() {
                "/api/v1/jobs".to_string()
            } else {
                format!("/api/v1/jobs?{}", q.join("&"))
            };
            let jobs: Vec<Job> = client.get(&path).await?;
            emit(conn.output, &jobs, |jobs| {
                let rows: Vec<Vec<String>> = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.name.clone(),
                            j.spec.team.clone(),
                            j.spec.queue.clone(),
                            j.status.state.as_str().to_string(),
                            j.status.attempts.len().to_string(),
                            wait_or_message(j),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "TEAM", "QUEUE", "STATE", "ATTEMPTS", "REASON"],
                    &rows,
                );
            });
            Ok(0)
        }
        JobCmd::Describe { name, conn } => {
            let client = Client::new(&conn);
            let job: Job = client.get(&format!("/api/v1/jobs/{}", enc(&name))).await?;
            emit(conn.output, &job, describe);
            Ok(0)
        }
        JobCmd::Approve { name, conn } => {
            let client = Client::new(&conn);
            let job: Job = client
                .post(
                    &format!("/api/v1/jobs/{}/approve", enc(&name)),
                    &serde_json::json!({}),
                )
                .await?;
            emit(conn.output, &job, |j| {
                println!("job {} approved: {}", j.name, j.status.state.as_str());
            });
            Ok(0)
        }
        JobCmd::Cancel { name, conn } => {
            let client = Client::new(&conn);
            let job: Job = client
                .post(
                    &format!("/api/v1/jobs/{}/cancel", enc(&name)),
                    &serde_json::json!({}),
                )
                .await?;
            emit(conn.output, &job, |j| {
                println!(
                    "job {} {}",
                    j.name,
                    if j.status.state.is_terminal() {
                        "cancelled"
                    } else {
                        "stopping (cancel requested)"
                    }
                );
            });
            Ok(0)
        }
        JobCmd::Logs {
            name,
            follow,
            stderr,
            attempt,
            pod,
            conn,
        } => {
            let client = Client::new(&conn);
            let stream = if stderr { "stderr" } else { "stdout" };
            let mut offset = 0u64;
            loop {
                let mut path = format!(
                    "/api/v1/jobs/{}/logs?stream={stream}&offset={offset}",
                    enc(&name)
                );
                if let Some(n) = attempt {
                    path.push_str(&format!("&attempt={n}"));
                }
                if let Some(r) = pod {
                    path.push_str(&format!("&pod={r}"));
                }
                let (text, headers) = client.get_text(&path).await?;
                print!("{text}");
                let next = headers
                    .get("x-plinth-next-offset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(offset);
                let complete = headers
                    .get("x-plinth-log-complete")
                    .is_some_and(|v| v == "true");
                if !follow || (complete && next == offset) {
                    break;
                }
                if next == offset {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                offset = next;
            }
            Ok(0)
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Simulate a spot interruption of one node of a local pool (`POOL-0`, `POOL-1`, …): the
    /// attempts on it stop (reason interrupted), their jobs wait again and resume from their
    /// checkpoint directory; a replacement node joins the pool. Admins only.
    Interrupt {
        pool: String,
        node: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run_pool(cmd: PoolCmd) -> CmdResult {
    match cmd {
        PoolCmd::Interrupt { pool, node, conn } => {
            let client = Client::new(&conn);
            let out: serde_json::Value = client
                .post(
                    &format!(
                        "/api/v1/pools/{}/nodes/{}/interrupt",
                        enc(&pool),
                        enc(&node)
                    ),
                    &serde_json::json!({}),
                )
                .await?;
            emit(conn.output, &out, |v| {
                let jobs: Vec<&str> = v["jobs"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|j| j.as_str()).collect())
                    .unwrap_or_default();
                if jobs.is_empty() {
                    println!("node {node} of pool {pool} interrupted; no job ran there");
                } else {
                    println!(
                        "node {node} of pool {pool} interrupted; stopped: {}",
                        jobs.join(", ")
                    );
                }
            });
            Ok(0)
        }
    }
}
