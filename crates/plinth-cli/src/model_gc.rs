//! `plinth model gc`: deletes the artifacts of model versions archived, or deprecated past
//! their sunset, and of MLflow 3 logged models deleted, longer ago than the retention (admins;
//! `POST /api/v1/models:gc`).

use clap::Args;
use serde_json::{Value, json};

use crate::Conn;
use crate::client::{Client, CmdResult};
use crate::output::{emit, table};

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Show what would be deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Retention to apply (30d, 12h, 90m, ...); default: the server's
    /// registry.archived_artifact_retention.
    #[arg(long)]
    retention: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(args: GcArgs) -> CmdResult {
    let client = Client::new(&args.conn);
    let mut body = json!({"dryRun": args.dry_run});
    if let Some(r) = &args.retention {
        body["retention"] = json!(r);
    }
    let v: Value = client.post("/api/v1/models:gc", &body).await?;
    emit(args.conn.output, &v, |r| {
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let versions = r["versions"].as_array().into_iter().flatten().map(|v| {
            vec![
                format!("{}@{}", text(v, "model"), text(v, "version")),
                text(v, "reason"),
                text(v, "since"),
                v["files"].to_string(),
                v["filesKept"].to_string(),
            ]
        });
        let logged = r["loggedModels"].as_array().into_iter().flatten().map(|m| {
            vec![
                format!("{} ({})", text(m, "modelId"), text(m, "name")),
                "deleted".to_owned(),
                text(m, "deleted"),
                m["files"].to_string(),
                m["filesKept"].to_string(),
            ]
        });
        let rows: Vec<Vec<String>> = versions.chain(logged).collect();
        table(&["VERSION", "REASON", "SINCE", "FILES", "KEPT"], &rows);
        println!(
            "{}{} blobs deleted ({} bytes), {} kept because still used",
            if r["dryRun"].as_bool() == Some(true) {
                "dry run: "
            } else {
                ""
            },
            r["blobsDeleted"],
            r["bytesFreed"],
            r["blobsShared"]
        );
    });
    Ok(0)
}
