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
    #[arg(long, short = 'f')]
    pub deployments: PathBuf,
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
        "total_seconds": r.total_seconds,
        "upstream_seconds": r.upstream_seconds,
        "cache_hit": r.cache_hit,
        "fallback_used": r.fallback_used,
        "stream": r.stream,
        "completed": r.completed,
    })
}

pub async fn run(a: GatewayArgs) -> CmdResult {
    let text = std::fs::read_to_string(&a.deployments).map_err(|e| {
        Failure::new(
            COULD_NOT_RUN,
            format!("cannot read {}: {e}", a.deployments.display()),
        )
    })?;
    let specs = parse_deployments_yaml(&text)
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("{}: {e}", a.deployments.display())))?;
    let mut keys = StaticKeys::new();
    for k in &a.keys {
        let (key, team, id) = parse_key(k)?;
        keys = keys.with_key(&key, &team, &id);
    }
    let addr: SocketAddr = a.listen.parse().map_err(|e| {
        Failure::new(
            COULD_NOT_RUN,
            format!(
                "--listen {:?}: not an address such as 127.0.0.1:7879: {e}",
                a.listen
            ),
        )
    })?;
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
        while let Some(r) = records.blocking_recv() {
            n += 1;
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{}", usage_json(&r));
            }
        }
        n
    });
    let gw = Gateway::builder(Arc::new(keys))
        .usage_sink(sink.clone())
        .build();
    gw.set_deployments(specs)
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("{}: {e}", a.deployments.display())))?;
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
