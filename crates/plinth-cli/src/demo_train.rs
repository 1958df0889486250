//! The training demo of `plinth up`: `plinth demo-train` (hidden) fits a small real model — a
//! logistic regression that predicts whether a flight arrives more than 15 minutes late — on a
//! registered, contract-checked flights dataset version and logs it through the MLflow REST API
//! (params, metrics per epoch, the model file as an artifact, the dataset version and code
//! commit as tags). [`up_demo`] submits it as a job through the normal queues, then registers
//! the version, evaluates the demo ReleasePolicy, promotes it to staging and prints the verdicts
//! and the lineage command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use clap::Args;
use serde_json::{Value, json};

use crate::client::{Client, CmdResult, Failure, enc};
use crate::{Conn, output};

/// The model the demo registers.
pub const DEMO_MODEL: &str = "flight-delays";
/// The demo's training job (one per data dir).
pub const DEMO_JOB: &str = "demo-train-flights";
/// The contract whose dataset versions it trains on.
pub const FLIGHTS_CONTRACT: &str = "nycflights13-flights";
/// The ReleasePolicy the demo applies to its model.
const DEMO_POLICY: &str = "flight-delays-gates";
/// The least-privilege token the job logs with: a member of team research.
const TRAINER: &str = "demo-trainer";
const PREFIX: &str = "plinth: training demo:";

#[derive(Args, Debug)]
pub struct DemoTrainArgs {
    /// The data of the dataset version: Parquet, CSV or gzip'd CSV with the nycflights13
    /// columns dep_delay, arr_delay, distance, hour, carrier, origin.
    #[arg(long)]
    data: PathBuf,
    /// The Plinth dataset version the data is (NAME-vN), recorded as the run's
    /// `plinth.datasets` tag.
    #[arg(long)]
    dataset: String,
    /// The MLflow experiment to log the run in.
    #[arg(long, default_value = DEMO_MODEL)]
    experiment: String,
    /// Passes over the training rows.
    #[arg(long, default_value_t = 4)]
    epochs: u32,
    #[arg(long, default_value_t = 0.5)]
    learning_rate: f64,
    /// The git commit of the training code, recorded as `plinth.code_commit`.
    #[arg(long)]
    code_commit: Option<String>,
    /// The MLflow tracking server (a Plinth server).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    tracking_uri: String,
}

// ---------------------------------------------------------------------------------------------
// The model

/// Rows as features and labels; every fifth row is held out for evaluation.
#[derive(Debug, Default)]
struct Data {
    /// Raw numeric features per row: dep_delay, distance, hour.
    numeric: Vec<[f64; 3]>,
    carrier: Vec<String>,
    origin: Vec<String>,
    label: Vec<bool>,
}

const NUMERIC: [&str; 3] = ["dep_delay", "distance", "hour"];

fn f64_column(
    batch: &arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<Vec<Option<f64>>, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name}: not in the data"))?;
    let col = arrow::compute::cast(col, &DataType::Float64)
        .map_err(|e| format!("column {name}: not numeric: {e}"))?;
    let a = col.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i)))
        .collect())
}

fn text_column(
    batch: &arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<Vec<Option<String>>, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name}: not in the data"))?;
    let col = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| format!("column {name}: not text: {e}"))?;
    let a = col.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
        .collect())
}

/// Reads the rows with a departure and an arrival delay (cancelled and diverted flights have
/// none).
fn read_data(path: &Path) -> Result<(Data, u64), String> {
    let ds = plinth_contracts::read::Dataset::open(path).map_err(|e| e.to_string())?;
    let opts = plinth_contracts::read::ReadOptions {
        columns: Some(
            [
                "dep_delay",
                "arr_delay",
                "distance",
                "hour",
                "carrier",
                "origin",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        ..Default::default()
    };
    let mut d = Data::default();
    let mut skipped = 0u64;
    ds.for_each_batch(&opts, &mut |b| {
        let cols = (|| -> Result<_, String> {
            Ok((
                f64_column(b, "dep_delay")?,
                f64_column(b, "arr_delay")?,
                f64_column(b, "distance")?,
                f64_column(b, "hour")?,
                text_column(b, "carrier")?,
                text_column(b, "origin")?,
            ))
        })()
        .map_err(plinth_contracts::read::ReadError::Callback)?;
        let (dep, arr, dist, hour, carrier, origin) = cols;
        for i in 0..b.num_rows() {
            match (dep[i], arr[i], dist[i], hour[i], &carrier[i], &origin[i]) {
                (Some(dep), Some(arr), Some(dist), Some(hour), Some(c), Some(o)) => {
                    d.numeric.push([dep, dist, hour]);
                    d.carrier.push(c.clone());
                    d.origin.push(o.clone());
                    d.label.push(arr > 15.0);
                }
                _ => skipped += 1,
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok((d, skipped))
}

/// Feature names and the design matrix: standardized numeric columns plus one-hot carrier and
/// origin (categories seen in the training rows, sorted).
struct Design {
    names: Vec<String>,
    mean: [f64; 3],
    std: [f64; 3],
    carriers: Vec<String>,
    origins: Vec<String>,
}

impl Design {
    fn fit(d: &Data, train: &[usize]) -> Design {
        let n = train.len().max(1) as f64;
        let mut mean = [0.0; 3];
        let mut std = [0.0; 3];
        for &i in train {
            for (k, m) in mean.iter_mut().enumerate() {
                *m += d.numeric[i][k] / n;
            }
        }
        for &i in train {
            for (k, s) in std.iter_mut().enumerate() {
                *s += (d.numeric[i][k] - mean[k]).powi(2) / n;
            }
        }
        for s in &mut std {
            *s = s.sqrt().max(1e-9);
        }
        let mut carriers: Vec<String> = train.iter().map(|&i| d.carrier[i].clone()).collect();
        carriers.sort();
        carriers.dedup();
        let mut origins: Vec<String> = train.iter().map(|&i| d.origin[i].clone()).collect();
        origins.sort();
        origins.dedup();
        let mut names: Vec<String> = NUMERIC.iter().map(|s| s.to_string()).collect();
        names.extend(carriers.iter().map(|c| format!("carrier={c}")));
        names.extend(origins.iter().map(|o| format!("origin={o}")));
        Design {
            names,
            mean,
            std,
            carriers,
            origins,
        }
    }

    /// The features of row `i` as (index, value) pairs (sparse: the one-hots are single 1s).
    fn row(&self, d: &Data, i: usize) -> [(usize, f64); 5] {
        let z = |k: usize| (d.numeric[i][k] - self.mean[k]) / self.std[k];
        let c = self
            .carriers
            .binary_search(&d.carrier[i])
            .map_or((0, 0.0), |j| (3 + j, 1.0));
        let o = self
            .origins
            .binary_search(&d.origin[i])
            .map_or((0, 0.0), |j| (3 + self.carriers.len() + j, 1.0));
        [(0, z(0)), (1, z(1)), (2, z(2)), c, o]
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

struct Model {
    w: Vec<f64>,
    b: f64,
}

impl Model {
    fn predict(&self, x: &[(usize, f64)]) -> f64 {
        sigmoid(self.b + x.iter().map(|(j, v)| self.w[*j] * v).sum::<f64>())
    }
}

/// Log loss, accuracy at 0.5 and ROC AUC (ties counted half) of `model` on `rows`.
fn evaluate(model: &Model, design: &Design, d: &Data, rows: &[usize]) -> (f64, f64, f64) {
    let mut scored: Vec<(f64, bool)> = Vec::with_capacity(rows.len());
    let mut loss = 0.0;
    let mut correct = 0usize;
    for &i in rows {
        let p = model.predict(&design.row(d, i)).clamp(1e-12, 1.0 - 1e-12);
        let y = d.label[i];
        loss -= if y { p.ln() } else { (1.0 - p).ln() };
        if (p >= 0.5) == y {
            correct += 1;
        }
        scored.push((p, y));
    }
    let n = rows.len().max(1) as f64;
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    // AUC = (sum of the positives' ranks - P(P+1)/2) / (P N), with average ranks for ties.
    let (mut rank_sum, mut pos) = (0.0, 0usize);
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        for s in &scored[i..j] {
            if s.1 {
                rank_sum += avg_rank;
                pos += 1;
            }
        }
        i = j;
    }
    let neg = scored.len() - pos;
    let auc = if pos == 0 || neg == 0 {
        0.5
    } else {
        (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
    };
    (loss / n, correct as f64 / n, auc)
}

// ---------------------------------------------------------------------------------------------
// MLflow over HTTP

struct Mlflow {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Mlflow {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method, format!("{}/api/2.0/mlflow/{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("MLflow {path}: cannot reach {}: {e}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("MLflow {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("MLflow {path}: unexpected answer: {e}"))
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn experiment_id(&self, name: &str) -> Result<String, String> {
        let found = self
            .call(
                reqwest::Method::GET,
                &format!("experiments/get-by-name?experiment_name={}", enc(name)),
                None,
            )
            .await;
        if let Ok(v) = found
            && let Some(id) = v["experiment"]["experiment_id"].as_str()
        {
            return Ok(id.to_string());
        }
        let v = self
            .post("experiments/create", json!({"name": name}))
            .await?;
        v["experiment_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "MLflow experiments/create: no experiment_id".to_string())
    }

    /// Uploads `bytes` as artifact `path` of a run whose artifact URI is `mlflow-artifacts:/…`.
    async fn upload(&self, artifact_uri: &str, path: &str, bytes: Vec<u8>) -> Result<(), String> {
        let rel = artifact_uri
            .strip_prefix("mlflow-artifacts:/")
            .ok_or_else(|| format!("artifact URI {artifact_uri:?}: not an mlflow-artifacts URI"))?;
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}/{path}",
            self.base,
            rel.trim_matches('/')
        );
        let mut req = self.http.put(url).body(bytes);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("artifact {path}: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(format!(
                "artifact {path}: {status}: {}",
                resp.text().await.unwrap_or_default()
            ));
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn kv(k: &str, v: impl ToString) -> Value {
    json!({"key": k, "value": v.to_string()})
}

/// The token the job logs with: `MLFLOW_TRACKING_TOKEN`, else the file `MLFLOW_TRACKING_TOKEN_FILE`
/// names (so the secret is not stored in the job's spec), else `PLINTH_TOKEN`.
fn job_token() -> Option<String> {
    if let Ok(t) = std::env::var("MLFLOW_TRACKING_TOKEN") {
        return Some(t);
    }
    if let Ok(f) = std::env::var("MLFLOW_TRACKING_TOKEN_FILE") {
        return std::fs::read_to_string(f)
            .ok()
            .map(|t| t.trim().to_string());
    }
    std::env::var("PLINTH_TOKEN").ok()
}

/// `plinth demo-train`: reads, fits, evaluates each epoch, logs the run and its model file.
pub async fn run(args: DemoTrainArgs) -> CmdResult {
    let fail = |m: String| Failure::new(1, m);
    let data_path = args.data.clone();
    let (d, skipped) = tokio::task::spawn_blocking(move || read_data(&data_path))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| Failure::new(3, e))?;
    if d.label.len() < 10 {
        return Err(Failure::new(
            3,
            format!(
                "{}: {} usable rows (with dep_delay, arr_delay, distance, hour, carrier, origin); need at least 10",
                args.data.display(),
                d.label.len()
            ),
        ));
    }
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for i in 0..d.label.len() {
        if i % 5 == 4 {
            eval.push(i)
        } else {
            train.push(i)
        }
    }
    println!(
        "read {} rows of {} ({skipped} without an arrival or departure delay skipped): {} to train, {} held out",
        d.label.len(),
        args.data.display(),
        train.len(),
        eval.len()
    );
    let design = Design::fit(&d, &train);
    let mut model = Model {
        w: vec![0.0; design.names.len()],
        b: 0.0,
    };
    const BATCH: usize = 256;
    let mlflow = Mlflow {
        http: reqwest::Client::new(),
        base: args.tracking_uri.trim_end_matches('/').to_string(),
        token: job_token(),
    };
    let exp = mlflow.experiment_id(&args.experiment).await.map_err(fail)?;
    let mut tags = vec![
        kv("plinth.datasets", &args.dataset),
        kv(
            "plinth.eval_sets",
            format!("[\"{}#every-5th-row\"]", args.dataset),
        ),
        kv(
            "plinth.features",
            serde_json::to_string(&design.names).unwrap_or_default(),
        ),
        kv("mlflow.source.name", "plinth demo-train"),
        kv("mlflow.runName", "demo-train"),
    ];
    if let Some(c) = &args.code_commit {
        tags.push(kv("plinth.code_commit", c));
    }
    if let Ok(job) = std::env::var("PLINTH_JOB_ID") {
        tags.push(kv("plinth.job", job));
    }
    let run = mlflow
        .post(
            "runs/create",
            json!({"experiment_id": exp, "run_name": "demo-train", "start_time": now_ms(), "tags": tags}),
        )
        .await
        .map_err(fail)?;
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .ok_or_else(|| fail("MLflow runs/create: no run_id".into()))?
        .to_string();
    let artifact_uri = run["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "MLflow run {run_id} in experiment {} ({exp})",
        args.experiment
    );
    let params = vec![
        kv("model", "logistic_regression"),
        kv("target", "arr_delay > 15"),
        kv("epochs", args.epochs),
        kv("learning_rate", args.learning_rate),
        kv("batch_size", BATCH),
        kv("features", design.names.len()),
        kv("train_rows", train.len()),
        kv("eval_rows", eval.len()),
    ];
    mlflow
        .post(
            "runs/log-batch",
            json!({"run_id": run_id, "params": params}),
        )
        .await
        .map_err(fail)?;

    // Mini-batch gradient descent; rows shuffled per epoch by a fixed-seed generator.
    let mut order = train.clone();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut last = (0.0, 0.0, 0.0);
    for epoch in 1..=args.epochs {
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(BATCH) {
            let mut gw = vec![0.0; model.w.len()];
            let mut gb = 0.0;
            for &i in chunk {
                let x = design.row(&d, i);
                let err = model.predict(&x) - if d.label[i] { 1.0 } else { 0.0 };
                for (j, v) in x {
                    gw[j] += err * v;
                }
                gb += err;
            }
            let scale = args.learning_rate / chunk.len() as f64;
            for (w, g) in model.w.iter_mut().zip(&gw) {
                *w -= scale * g;
            }
            model.b -= scale * gb;
        }
        let (train_loss, _, _) = evaluate(&model, &design, &d, &train);
        let (loss, acc, auc) = evaluate(&model, &design, &d, &eval);
        last = (loss, acc, auc);
        println!(
            "epoch {epoch}: train log loss {train_loss:.4}, eval log loss {loss:.4}, accuracy {acc:.4}, auc {auc:.4}"
        );
        let ts = now_ms();
        let m = |k: &str, v: f64| json!({"key": k, "value": v, "timestamp": ts, "step": epoch});
        mlflow
            .post(
                "runs/log-batch",
                json!({"run_id": run_id, "metrics": [
                    m("train_log_loss", train_loss), m("log_loss", loss),
                    m("accuracy", acc), m("auc", auc)]}),
            )
            .await
            .map_err(fail)?;
    }

    let weights: BTreeMap<&str, f64> = design
        .names
        .iter()
        .map(String::as_str)
        .zip(model.w.iter().copied())
        .collect();
    let standardize: serde_json::Map<String, Value> = NUMERIC
        .iter()
        .enumerate()
        .map(|(k, n)| {
            (
                n.to_string(),
                json!({"mean": design.mean[k], "std": design.std[k]}),
            )
        })
        .collect();
    let file = json!({
        "type": "logistic_regression",
        "target": "arr_delay > 15",
        "threshold": 0.5,
        "bias": model.b,
        "weights": weights,
        "standardize": standardize,
        "dataset": args.dataset,
        "eval": {"log_loss": last.0, "accuracy": last.1, "auc": last.2},
    });
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| fail(e.to_string()))?;
    mlflow
        .upload(&artifact_uri, "model/model.json", bytes)
        .await
        .map_err(fail)?;
    mlflow
        .post(
            "runs/update",
            json!({"run_id": run_id, "status": "FINISHED", "end_time": now_ms()}),
        )
        .await
        .map_err(fail)?;
    println!(
        "run {run_id} finished: auc {:.4}, accuracy {:.4} on {} held-out flights; model file {artifact_uri}/model/model.json",
        last.2,
        last.1,
        eval.len()
    );
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// `plinth up`

/// The commit of the checkout `plinth up` runs in, else the binary's version.
fn code_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("plinth-{}", env!("CARGO_PKG_VERSION")))
}

fn policy_document() -> Value {
    json!({
        "apiVersion": "plinth/v1",
        "kind": "ReleasePolicy",
        "metadata": {"name": DEMO_POLICY, "labels": {"source": "plinth-up"}},
        "spec": {
            "model": DEMO_MODEL,
            "stages": ["staging", "production"],
            "metrics": [{"metric": "auc", "min": 0.8}, {"metric": "accuracy", "min": 0.8}],
            "approvals": 1,
            "approvalStages": ["production"],
        }
    })
}

/// The demo trainer's token (a member of team research), kept in the data dir (mode 0600).
async fn trainer_token(client: &Client, data_dir: &Path) -> Result<PathBuf, String> {
    let path = std::path::absolute(data_dir.join("demo-trainer-token"))
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    if std::fs::read_to_string(&path).is_ok_and(|t| !t.trim().is_empty()) {
        return Ok(path);
    }
    let created: plinth_types::api::CreatedToken = client
        .post(
            "/api/v1/tokens",
            &json!({"name": TRAINER, "team": "research", "role": "member"}),
        )
        .await
        .map_err(|e| e.message)?;
    crate::client::write_private(&path, &created.token, false)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Submits the training job (once per data dir) and finishes the demo in the background:
/// registers the version, evaluates the gates, promotes to staging, prints the verdicts.
pub async fn up_demo(
    client: &Client,
    url: &str,
    admin_token: &str,
    data_dir: &Path,
    flights: Option<(u64, PathBuf)>,
) {
    let Some((version, path)) = flights else {
        println!(
            "{PREFIX} skipped: no version of datacontract/{FLIGHTS_CONTRACT} is registered (its data is not on this machine)"
        );
        return;
    };
    let dataset = format!("{FLIGHTS_CONTRACT}-v{version}");
    let request = plinth_types::api::ApplyRequest {
        documents: vec![plinth_types::api::SourcedDocument {
            file: Some("plinth up (training demo)".into()),
            index: Some(1),
            document: policy_document(),
        }],
        dry_run: false,
    };
    let applied: Result<Value, _> = client.post("/api/v1/apply", &request).await;
    if let Err(e) = applied {
        println!(
            "{PREFIX} skipped: the release policy was refused: {}",
            e.message
        );
        return;
    }
    let token_file = match trainer_token(client, data_dir).await {
        Ok(p) => p,
        Err(e) => {
            println!("{PREFIX} skipped: no token for the training job: {e}");
            return;
        }
    };
    let conn = |token: Option<String>| Conn {
        server: Some(url.to_string()),
        token,
        output: output::Format::Table,
    };
    let admin = Client::new(&conn(Some(admin_token.to_string())));
    let trainer = Client::new(&conn(
        std::fs::read_to_string(&token_file)
            .ok()
            .map(|t| t.trim().to_string()),
    ));
    let exists = client
        .get::<Value>(&format!("/api/v1/jobs/{DEMO_JOB}"))
        .await
        .is_ok();
    if !exists {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "plinth".into());
        let req = json!({
            "name": DEMO_JOB,
            "spec": {
                "command": [exe, "demo-train", "--data", path.display().to_string(),
                            "--dataset", dataset, "--code-commit", code_commit()],
                "team": "research",
                "queue": "research-training",
                "class": "training",
                "cpus": 1,
                "memoryGib": 1,
                "maxRuntime": "10m",
                "env": {"MLFLOW_TRACKING_URI": url,
                        "MLFLOW_TRACKING_TOKEN_FILE": token_file.display().to_string()},
                "tags": {"source": "plinth-up", "model": DEMO_MODEL},
            }
        });
        // Submitted by the trainer: the job is team research's, not the admin's.
        match trainer.post::<_, Value>("/api/v1/jobs", &req).await {
            Ok(_) => println!(
                "{PREFIX} job {DEMO_JOB} submitted (class training, team research) to fit {DEMO_MODEL} on {dataset}: plinth job logs {DEMO_JOB}"
            ),
            Err(e) => {
                println!("{PREFIX} job {DEMO_JOB} not submitted: {}", e.message);
                return;
            }
        }
    }
    tokio::spawn(async move {
        for line in finish(&admin, &trainer).await {
            println!("{PREFIX} {line}");
        }
    });
}

/// Waits for the job, then registers, gates and promotes its run; returns the lines to print.
async fn finish(admin: &Client, trainer: &Client) -> Vec<String> {
    match finish_inner(admin, trainer).await {
        Ok(lines) => lines,
        Err(e) => vec![e],
    }
}

async fn finish_inner(admin: &Client, trainer: &Client) -> Result<Vec<String>, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    let mut approved = false;
    let job = loop {
        let j: Value = admin
            .get(&format!("/api/v1/jobs/{DEMO_JOB}"))
            .await
            .map_err(|e| format!("job {DEMO_JOB}: {}", e.message))?;
        let state = j["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if ["succeeded", "failed", "cancelled", "lost"].contains(&state.as_str()) {
            break state;
        }
        if state == "pending_approval" && !approved {
            // A budget of team research asks for approval: the demo's admin gives it.
            approved = true;
            let r: Result<Value, _> = admin
                .post(&format!("/api/v1/jobs/{DEMO_JOB}/approve"), &json!({}))
                .await;
            println!(
                "{PREFIX} job {DEMO_JOB} was held for approval by a budget of team research ({}): {}",
                j["status"]["message"].as_str().unwrap_or("-"),
                match r {
                    Ok(_) => "approved by the admin".to_string(),
                    Err(e) => format!("not approved: {}", e.message),
                }
            );
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "job {DEMO_JOB} still {state} after 15 minutes; see plinth job describe {DEMO_JOB}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if job != "succeeded" {
        return Err(format!(
            "job {DEMO_JOB} {job}: see plinth job logs {DEMO_JOB}"
        ));
    }
    let mut lines = Vec::new();
    // The run the job logged: the newest finished run of the demo's experiment.
    let exp: Value = admin
        .get(&format!(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name={DEMO_MODEL}"
        ))
        .await
        .map_err(|e| format!("experiment {DEMO_MODEL}: {}", e.message))?;
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap_or_default();
    let runs: Value = admin
        .post(
            "/api/2.0/mlflow/runs/search",
            &json!({"experiment_ids": [exp_id], "max_results": 1000}),
        )
        .await
        .map_err(|e| format!("runs of {DEMO_MODEL}: {}", e.message))?;
    let run = runs["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["info"]["status"] == "FINISHED")
        .max_by_key(|r| r["info"]["start_time"].as_i64().unwrap_or(0))
        .ok_or_else(|| format!("job {DEMO_JOB} succeeded but logged no finished run"))?;
    let run_id = run["info"]["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let metric = |k: &str| {
        run["data"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["key"] == k)
            .and_then(|m| m["value"].as_f64())
            .unwrap_or(f64::NAN)
    };
    lines.push(format!(
        "run {run_id} finished: auc {:.3}, accuracy {:.3} on held-out flights",
        metric("auc"),
        metric("accuracy")
    ));
    // Registered already (an earlier `plinth up`)? Else register as the trainer (team research).
    let model: Option<Value> = admin
        .get(&format!("/api/v1/models/{DEMO_MODEL}"))
        .await
        .ok();
    let existing = model.as_ref().and_then(|m| {
        m["versions"]
            .as_array()?
            .iter()
            .find(|v| v["runId"] == run_id.as_str())
            .cloned()
    });
    let v = match existing {
        Some(v) => v,
        None => trainer
            .post(
                &format!("/api/v1/models/{DEMO_MODEL}/versions"),
                &json!({"source": format!("runs:/{run_id}/model"), "runId": run_id,
                        "description": "logistic regression: arrival delay > 15 min (plinth up demo)"}),
            )
            .await
            .map_err(|e| format!("registering {DEMO_MODEL}: {}", e.message))?,
    };
    let version = v["version"].as_str().unwrap_or_default().to_string();
    let datasets: Vec<&str> = v["manifest"]["datasets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    lines.push(format!(
        "{DEMO_MODEL} version {version} registered by {} (team research), trained on {}",
        v["author"].as_str().unwrap_or("-"),
        datasets.join(", ")
    ));
    let base = format!("/api/v1/models/{DEMO_MODEL}/versions/{version}");
    for target in ["staging", "production"] {
        let g: Value = admin
            .get(&format!("{base}/gates?to={target}"))
            .await
            .map_err(|e| format!("gates of {DEMO_MODEL} {version}: {}", e.message))?;
        let passed = g["passed"] == true;
        let verdicts: Vec<&Value> = g["verdicts"].as_array().into_iter().flatten().collect();
        let failed = verdicts.iter().filter(|v| v["passed"] != true).count();
        lines.push(format!(
            "gates of {DEMO_MODEL} {version} to {target} ({}): {}",
            g["policy"].as_str().unwrap_or("-"),
            if passed {
                "all passed".to_string()
            } else {
                format!("{failed} of {} failed", verdicts.len())
            }
        ));
        for x in verdicts {
            lines.push(format!(
                "  {} {}: {}",
                if x["passed"] == true { "PASS" } else { "FAIL" },
                x["gate"].as_str().unwrap_or_default(),
                x["detail"].as_str().unwrap_or_default()
            ));
        }
        let in_stage = v["stages"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == target || x == "production"));
        if target == "staging" && passed && !in_stage {
            let r: Result<Value, _> = admin
                .post(&format!("{base}/promote"), &json!({"to": "staging"}))
                .await;
            match r {
                Ok(_) => lines.push(format!(
                    "promoted {DEMO_MODEL} version {version} to staging"
                )),
                Err(e) => lines.push(format!("not promoted to staging: {}", e.message)),
            }
        }
        if target == "production" && !passed {
            lines.push(format!(
                "production needs an approval: a maintainer of team research (or an admin) runs `plinth model approve {DEMO_MODEL} {version}`, then `plinth model promote {DEMO_MODEL} {version} --to production`"
            ));
        }
    }
    lines.push(format!(
        "lineage back to the contract-checked data: plinth lineage show model:{DEMO_MODEL}@{version} --direction up"
    ));
    Ok(lines)
}
