//! `plinth dataset`: register dataset versions against a DataContract on the server and list
//! them.

use clap::Subcommand;
use plinth_types::api::{DatasetVersion, RegisterDatasetRequest};

use crate::Conn;
use crate::client::{Client, CmdResult, enc};
use crate::output::{dash, emit, table};

#[derive(Subcommand, Debug)]
pub enum DatasetCmd {
    /// Check a data file or folder against a DataContract on the server and record it as the
    /// contract's next version. Exit 0 passed, 1 failed, 2 error.
    Register {
        /// The DataContract's name.
        contract: String,
        /// A path the server can read; a relative path is taken from the server's working
        /// directory.
        path: String,
        /// "Now" for freshness and retention checks (RFC 3339); default: the server's clock.
        #[arg(long)]
        now: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List a DataContract's dataset versions, newest first.
    Versions {
        contract: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: DatasetCmd) -> CmdResult {
    match cmd {
        DatasetCmd::Register {
            contract,
            path,
            now,
            conn,
        } => {
            let v: DatasetVersion = Client::new(&conn)
                .post(
                    &format!("/api/v1/datacontracts/{}/versions", enc(&contract)),
                    &RegisterDatasetRequest { path, now },
                )
                .await?;
            emit(conn.output, &v, |v| {
                println!(
                    "{} {}: {} rows, digest {}",
                    v.name,
                    v.spec.status,
                    v.spec.rows,
                    dash(v.spec.digest.as_deref())
                );
                let counts: Vec<String> = v
                    .spec
                    .counts
                    .iter()
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect();
                println!("checks: {}", counts.join(", "));
                if let Some(e) = v.spec.report.get("error").and_then(|e| e.as_str()) {
                    println!("error: {e}");
                }
                for c in v.spec.report["checks"].as_array().into_iter().flatten() {
                    let status = c["status"].as_str().unwrap_or_default();
                    if status == "failed" || status == "error" {
                        println!(
                            "  {status}: {}: {}",
                            c["id"].as_str().unwrap_or_default(),
                            c["message"].as_str().unwrap_or_default()
                        );
                    }
                }
            });
            Ok(match v.spec.status.as_str() {
                "passed" => 0,
                "failed" => 1,
                _ => 2,
            })
        }
        DatasetCmd::Versions { contract, conn } => {
            let list: Vec<DatasetVersion> = Client::new(&conn)
                .get(&format!(
                    "/api/v1/datacontracts/{}/versions",
                    enc(&contract)
                ))
                .await?;
            emit(conn.output, &list, |list| {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            v.spec.version.to_string(),
                            v.spec.status.clone(),
                            v.spec.rows.to_string(),
                            v.spec
                                .counts
                                .get("failed")
                                .copied()
                                .unwrap_or(0)
                                .to_string(),
                            dash(v.spec.freshness.as_deref()),
                            v.registered_at.clone(),
                            v.spec.path.clone(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "VERSION",
                        "STATUS",
                        "ROWS",
                        "FAILED",
                        "FRESHNESS",
                        "REGISTERED",
                        "PATH",
                    ],
                    &rows,
                );
            });
            Ok(0)
        }
    }
}
