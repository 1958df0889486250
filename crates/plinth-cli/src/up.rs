//! `plinth up`: the server on an embedded store plus the demo workspace, sized to this machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use plinth_types::api::{
    ApplyRequest, ApplyResponse, DatasetDrift, DatasetReference, DatasetVersion,
    SetReferenceRequest, SourcedDocument,
};

use crate::client::{Client, CmdResult, Failure};
use crate::{Conn, output};

/// The demo workspace shipped in the binary (the same files as `examples/workspace/`).
const EMBEDDED: &[(&str, &str)] = &[
    (
        "examples/workspace/10-teams.yaml",
        include_str!("../../../examples/workspace/10-teams.yaml"),
    ),
    (
        "examples/workspace/20-queues.yaml",
        include_str!("../../../examples/workspace/20-queues.yaml"),
    ),
];

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Directory for the embedded store; reused on the next `plinth up`.
    #[arg(long, default_value = "./plinth-data")]
    data_dir: PathBuf,
    /// Address for the API and console.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// A directory of resource YAML to apply instead of the built-in demo workspace.
    #[arg(long)]
    examples: Option<PathBuf>,
}

/// The machine's accelerators or CPUs, as the `local` pool.
fn local_pool() -> serde_json::Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| (kb / 1024 / 1024).max(1))
        .unwrap_or(1);
    let mut spec = serde_json::json!({
        "backend": "local",
        "nodes": 1,
        "cpusPerNode": cpus,
        "memoryGibPerNode": mem_gib,
        "procurement": "on_demand",
        "pricePerNodeHour": 0.1,
    });
    if let Some((kind, count, mem)) = detect_gpus() {
        spec["accelerator"] = serde_json::json!({"type": kind, "count": count, "memoryGib": mem});
        spec["pricePerGpuHour"] = serde_json::json!(2.0);
    }
    serde_json::json!({
        "apiVersion": "plinth/v1",
        "kind": "Pool",
        "metadata": {"name": "local", "labels": {"source": "plinth-up"}},
        "spec": spec,
    })
}

/// NVIDIA GPUs as the NVIDIA driver's management library reports them (through nvidia-smi),
/// or `None` on a machine without a driver.
fn detect_gpus() -> Option<(String, usize, u64)> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let gpus: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let (name, mem) = l.split_once(',')?;
            let kind = name.trim().to_ascii_lowercase().replace(' ', "-");
            let kind = if kind.starts_with("nvidia") {
                kind
            } else {
                format!("nvidia-{kind}")
            };
            Some((kind, mem.trim().parse::<u64>().ok()? / 1024))
        })
        .collect();
    let (kind, mem) = gpus.first()?.clone();
    Some((kind, gpus.len(), mem))
}

fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub async fn up(args: UpArgs) -> CmdResult {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| Failure::new(3, format!("cannot create {}: {e}", args.data_dir.display())))?;
    // The demo keeps its admin token in the data dir (mode 0600) so every `plinth up` can print it.
    let token_path = args.data_dir.join("admin-token");
    let token = match read_token_file(&token_path) {
        Some(t) => t,
        None => {
            let (t, _) =
                plinth_core::generate_token().map_err(|e| Failure::new(1, e.to_string()))?;
            crate::client::write_private(&token_path, &t, true).map_err(|e| {
                Failure::new(1, format!("cannot write {}: {e}", token_path.display()))
            })?;
            t
        }
    };
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k != "PLINTH_DATABASE_URL")
        .collect();
    let overrides = plinth_config::ServerOverrides {
        listen: Some(args.listen.clone()),
        data_dir: Some(args.data_dir.clone()),
        ..Default::default()
    };
    let mut config = plinth_config::ServerConfig::load(&env, overrides)
        .map_err(|e| Failure::new(3, e.to_string()))?;
    config.bootstrap_token = Some(token.clone());
    plinth_server::init_logging(config.log_format, "warn");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(plinth_server::serve(config, move |s| {
        let _ = tx.send((s.addr, s.gateway_addr));
    }));
    let (addr, gateway_addr) = match rx.await {
        Ok(a) => a,
        Err(_) => {
            let msg = match server.await {
                Ok(Err(e)) => e.to_string(),
                _ => "the server stopped during start-up".to_string(),
            };
            return Err(Failure::new(7, msg));
        }
    };
    let url = format!("http://{addr}");
    let conn = Conn {
        server: Some(url.clone()),
        token: Some(token.clone()),
        output: output::Format::Table,
    };
    let client = Client::new(&conn);
    let mut documents = vec![SourcedDocument {
        file: Some("plinth up (this machine)".into()),
        index: Some(1),
        document: local_pool(),
    }];
    documents.extend(example_documents(args.examples.as_deref())?);
    let applied: ApplyResponse = client.post("/api/v1/apply", &ApplyRequest { documents, dry_run: false }).await.map_err(|e| {
        if e.exit_code == 4 {
            Failure::new(4, format!("{}; the data dir {} was set up with another admin token: remove it or use `plinth serve`", e.message, args.data_dir.display()))
        } else {
            e
        }
    })?;
    println!("plinth: demo workspace applied:");
    crate::commands::print_apply(&applied);
    let registered = register_example_datasets(&client, &args.data_dir).await;
    submit_example_job(&client).await;
    crate::demo_jobs::up_demo(&conn, &args.data_dir).await;
    crate::cost::up_demo(&client).await;
    if let Some(g) = gateway_addr {
        crate::gateway::up_demo(&client, g, &token).await;
    }
    let flights = registered.get(crate::demo_train::FLIGHTS_CONTRACT).cloned();
    crate::demo_train::up_demo(&client, &url, &token, &args.data_dir, flights).await;
    println!();
    println!("plinth: listening on {url}");
    println!("plinth: console at {url}/console");
    if let Some(g) = gateway_addr {
        println!("plinth: inference gateway (OpenAI-compatible) at http://{g}/v1");
    }
    println!("plinth: admin token: {token}");
    println!("plinth: for the CLI: export PLINTH_SERVER={url} PLINTH_TOKEN={token}");
    println!("plinth: press Ctrl-C to stop");
    match server.await {
        Ok(Ok(())) => Ok(0),
        Ok(Err(e)) => Err(Failure::new(7, e.to_string())),
        Err(e) => Err(Failure::new(1, format!("server task failed: {e}"))),
    }
}

fn example_documents(dir: Option<&Path>) -> Result<Vec<SourcedDocument>, Failure> {
    let mut out = Vec::new();
    match dir {
        Some(d) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                .map_err(|e| Failure::new(3, format!("{}: {e}", d.display())))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| Failure::new(3, format!("{}: {e}", f.display())))?;
                out.extend(
                    plinth_config::parse_yaml_documents(&text, &f.display().to_string())
                        .map_err(|e| Failure::new(3, e.to_string()))?,
                );
            }
        }
        None => {
            for (name, text) in EMBEDDED {
                out.extend(
                    plinth_config::parse_yaml_documents(text, name)
                        .map_err(|e| Failure::new(3, e.to_string()))?,
                );
            }
        }
    }
    Ok(out)
}

/// The example contract whose versions are months of the weather file (see
/// [`seasonal_weather_demo`]).
const MONTHLY_CONTRACT: &str = "weather-monthly";

/// Applies the example ODCS contracts (`examples/contracts/` under the working directory) and
/// registers the real data their servers name, when that data is present, so the demo shows
/// real check results. Data already registered (same digest) is not registered again. Anything
/// missing is reported and skipped: the demo runs without it. Returns each contract's version
/// of the data and the data's path.
async fn register_example_datasets(
    client: &Client,
    data_dir: &Path,
) -> BTreeMap<String, (u64, PathBuf)> {
    let mut registered = BTreeMap::new();
    let dir = Path::new("examples/contracts");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return registered;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".odcs.yaml"))
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.display().to_string();
        let docs = match plinth_config::parse_yaml_documents(&text, &name) {
            Ok(d) => d,
            Err(e) => {
                println!("plinth: skipped {name}: {e}");
                continue;
            }
        };
        let Some(doc) = docs.first().map(|d| d.document.clone()) else {
            continue;
        };
        let applied: Result<ApplyResponse, _> = client
            .post(
                "/api/v1/apply",
                &ApplyRequest {
                    documents: docs,
                    dry_run: false,
                },
            )
            .await;
        if let Err(e) = applied {
            println!("plinth: skipped {name}: {}", e.message);
            continue;
        }
        let id = doc
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let data = doc
            .get("servers")
            .and_then(|s| s.as_array())
            .and_then(|s| {
                s.iter()
                    .find_map(|srv| srv.get("path").and_then(|p| p.as_str()))
            })
            .map(|p| file.parent().unwrap_or(dir).join(p));
        let Some(data) = data.filter(|p| p.exists()) else {
            println!(
                "plinth: datacontract/{id} applied; its data is not on this machine, so no version was registered"
            );
            continue;
        };
        let path = std::fs::canonicalize(&data).unwrap_or(data);
        if id == MONTHLY_CONTRACT {
            seasonal_weather_demo(client, &path, data_dir).await;
        } else if let Some(v) = register_once(client, &id, &path).await {
            registered.insert(id, (v, path));
        }
    }
    registered
}

/// Registers the data at `path` as contract `id`'s next version unless a version with the same
/// content digest exists; returns the version number it has either way.
async fn register_once(client: &Client, id: &str, path: &Path) -> Option<u64> {
    let versions_path = format!("/api/v1/datacontracts/{}/versions", crate::client::enc(id));
    let digest = plinth_core::content_digest(path).ok();
    let existing: Vec<DatasetVersion> = client.get(&versions_path).await.unwrap_or_default();
    if let Some(v) = existing
        .iter()
        .find(|v| digest.is_some() && v.spec.digest == digest)
    {
        println!(
            "plinth: dataset {} already registered against datacontract/{id}: {} ({} rows)",
            v.name, v.spec.status, v.spec.rows
        );
        return Some(v.spec.version);
    }
    let body = serde_json::json!({"path": path.display().to_string()});
    let result: Result<DatasetVersion, _> = client.post(&versions_path, &body).await;
    match result {
        Ok(v) => {
            println!(
                "plinth: dataset {} checked against datacontract/{id}: {} ({} rows)",
                v.name, v.spec.status, v.spec.rows
            );
            Some(v.spec.version)
        }
        Err(e) => {
            println!(
                "plinth: could not register the data of datacontract/{id}: {}",
                e.message
            );
            None
        }
    }
}

/// Writes the rows of the weather CSV at `source` whose `month` column is `month` to `dest`
/// (through a temporary file and a rename; an existing file is left alone).
fn write_month_slice(source: &Path, dest: &Path, month: u32) -> Result<(), String> {
    if dest.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty file", source.display()))?;
    let col = header
        .split(',')
        .position(|h| h.trim_matches('"') == "month")
        .ok_or_else(|| format!("{}: no month column", source.display()))?;
    let wanted = month.to_string();
    let mut out = String::with_capacity(text.len() / 10);
    out.push_str(header);
    out.push('\n');
    let mut rows = 0;
    for line in lines {
        if line.split(',').nth(col).map(|v| v.trim_matches('"')) == Some(wanted.as_str()) {
            out.push_str(line);
            out.push('\n');
            rows += 1;
        }
    }
    if rows == 0 {
        return Err(format!("{}: no rows of month {month}", source.display()));
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = dest.with_extension("csv.part");
    std::fs::write(&tmp, out).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))
}

/// The seasonal-drift demo: January and July 2013 cut from the real weather file into
/// `<data_dir>/demo/`, registered in that order as versions of `weather-monthly`, January as
/// the drift reference, so the console's drift chart shows temp and dewp drifting.
async fn seasonal_weather_demo(client: &Client, source: &Path, data_dir: &Path) {
    let demo = data_dir.join("demo");
    let mut versions = Vec::new();
    for month in [1u32, 7] {
        let dest = demo.join(format!("weather-2013-{month:02}.csv"));
        if let Err(e) = write_month_slice(source, &dest, month) {
            println!("plinth: skipped the seasonal drift demo: {e}");
            return;
        }
        let dest = std::fs::canonicalize(&dest).unwrap_or(dest);
        match register_once(client, MONTHLY_CONTRACT, &dest).await {
            Some(v) => versions.push(v),
            None => return,
        }
    }
    let base = format!("/api/v1/datacontracts/{MONTHLY_CONTRACT}");
    let reference: Result<DatasetReference, _> = client.get(&format!("{base}/reference")).await;
    if reference.is_err()
        && let Some(january) = versions.first()
    {
        let set: Result<DatasetReference, _> = client
            .post(
                &format!("{base}/reference"),
                &SetReferenceRequest { version: *january },
            )
            .await;
        if let Err(e) = set {
            println!("plinth: could not set the drift reference: {}", e.message);
        }
    }
    let drift: Result<DatasetDrift, _> = client.get(&format!("{base}/drift")).await;
    match drift {
        Ok(d) => println!(
            "plinth: datacontract/{MONTHLY_CONTRACT}: July (v{}) against January (v{}): {} in {}",
            d.current,
            d.reference,
            if d.verdict == "drift" {
                "drift"
            } else {
                "no drift"
            },
            if d.drifted_columns.is_empty() {
                "no column".to_string()
            } else {
                d.drifted_columns.join(", ")
            }
        ),
        Err(e) => println!(
            "plinth: could not compute the seasonal drift: {}",
            e.message
        ),
    }
}

/// Submits one small real job (once per data dir) so the demo shows a finished job.
async fn submit_example_job(client: &Client) {
    const NAME: &str = "hello-plinth";
    if client
        .get::<plinth_types::job::Job>(&format!("/api/v1/jobs/{NAME}"))
        .await
        .is_ok()
    {
        return;
    }
    let req = serde_json::json!({
        "name": NAME,
        "spec": {
            "command": ["sh", "-c", "echo hello from a plinth job; uname -sm"],
            "team": "research",
            "queue": "research-training",
            "class": "batch_inference",
            "maxRuntime": "1m",
            "tags": {"source": "plinth-up"},
        }
    });
    match client
        .post::<_, plinth_types::job::Job>("/api/v1/jobs", &req)
        .await
    {
        Ok(j) => println!(
            "plinth: example job {} submitted (plinth job logs {NAME})",
            j.name
        ),
        Err(e) => eprintln!("plinth: example job not submitted: {}", e.message),
    }
}
