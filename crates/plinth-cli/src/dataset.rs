//! `plinth dataset`: register dataset versions against a DataContract on the server (a path
//! the server reads, or an upload), list and show them, read their profiles and OpenLineage
//! facets, set the drift reference and measure drift between versions.

use std::path::PathBuf;

use clap::Subcommand;
use plinth_contracts::profile::DatasetProfile;
use plinth_types::api::{
    DatasetDrift, DatasetReference, DatasetVersion, RegisterDatasetRequest, SetReferenceRequest,
};

use crate::Conn;
use crate::client::{Client, CmdResult, Failure, enc};
use crate::data::num;
use crate::output::{Format, dash, emit, table};

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
        /// Send the local file PATH to the server (.parquet, .csv, .csv.gz, .arrow, .feather,
        /// .ipc) instead of naming a path the server reads.
        #[arg(long)]
        upload: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List a DataContract's dataset versions, newest first.
    Versions {
        contract: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one dataset version and its check results.
    Show {
        contract: String,
        /// The version number (1 for the first).
        version: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show the per-column profile stored with a version (default: the newest).
    Profile {
        contract: String,
        version: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Drift between two versions' stored profiles, per column, against each column's
    /// thresholds. Exit 0: no drift; 1: drift detected.
    Drift {
        contract: String,
        /// The reference version; default: the contract's stored reference, else version 1.
        #[arg(long)]
        reference: Option<u64>,
        /// The current version; default: the newest.
        #[arg(long)]
        current: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a version the reference that drift is measured against by default.
    Reference {
        contract: String,
        version: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// A version as an OpenLineage dataset with schema, data-quality metrics and assertions
    /// facets (JSON; `-o yaml` for YAML).
    Lineage {
        contract: String,
        version: u64,
        #[command(flatten)]
        conn: Conn,
    },
}

fn versions_path(contract: &str) -> String {
    format!("/api/v1/datacontracts/{}/versions", enc(contract))
}

/// Sends a local file's bytes to the upload endpoint.
async fn upload(
    client: &Client,
    contract: &str,
    path: &str,
    now: Option<&str>,
) -> Result<DatasetVersion, Failure> {
    let file = PathBuf::from(path);
    let filename = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Failure::new(3, format!("{path}: not a file name")))?;
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| Failure::new(3, format!("{path}: {e}")))?;
    let mut url = format!(
        "{}/upload?filename={}",
        versions_path(contract),
        enc(&filename)
    );
    if let Some(n) = now {
        url.push_str(&format!("&now={}", enc(n)));
    }
    client
        .post_bytes(&url, "application/octet-stream", bytes)
        .await
}

fn print_version(v: &DatasetVersion) {
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
}

fn print_drift(d: &DatasetDrift) {
    println!(
        "{}: v{} (reference, {}) -> v{} (current)",
        d.contract, d.reference, d.reference_from, d.current
    );
    let rows: Vec<Vec<String>> = d
        .columns
        .iter()
        .map(|c| {
            let (stats, limits) = if c.kind == "numeric" {
                (
                    format!(
                        "psi {}  ks {}  ks p {}",
                        num(c.psi),
                        num(c.ks_statistic),
                        num(c.ks_pvalue)
                    ),
                    format!(
                        "psi >= {}, ks p < {}",
                        c.thresholds.psi,
                        c.thresholds
                            .ks_pvalue
                            .map_or("-".to_string(), |p| p.to_string())
                    ),
                )
            } else {
                (
                    format!(
                        "psi {}  js {}  chi2 p {}",
                        num(c.psi),
                        num(c.js_distance),
                        num(c.chi2_pvalue)
                    ),
                    format!(
                        "psi >= {}, js >= {}{}",
                        c.thresholds.psi,
                        c.thresholds.js,
                        c.thresholds
                            .chi2_pvalue
                            .map(|p| format!(", chi2 p < {p}"))
                            .unwrap_or_default()
                    ),
                )
            };
            vec![
                c.name.clone(),
                c.kind.clone(),
                stats,
                limits,
                if c.drifted {
                    "DRIFT".into()
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    table(
        &["COLUMN", "KIND", "STATISTICS", "THRESHOLD", "RESULT"],
        &rows,
    );
    if d.drifted_columns.is_empty() {
        println!("no drift in {} columns", d.columns.len());
    } else {
        println!(
            "drift in {} of {} columns: {}",
            d.drifted_columns.len(),
            d.columns.len(),
            d.drifted_columns.join(", ")
        );
    }
}

pub async fn run(cmd: DatasetCmd) -> CmdResult {
    match cmd {
        DatasetCmd::Register {
            contract,
            path,
            now,
            upload: send,
            conn,
        } => {
            let client = Client::new(&conn);
            let v: DatasetVersion = if send {
                upload(&client, &contract, &path, now.as_deref()).await?
            } else {
                client
                    .post(
                        &versions_path(&contract),
                        &RegisterDatasetRequest { path, now },
                    )
                    .await?
            };
            emit(conn.output, &v, print_version);
            Ok(match v.spec.status.as_str() {
                "passed" => 0,
                "failed" => 1,
                _ => 2,
            })
        }
        DatasetCmd::Show {
            contract,
            version,
            conn,
        } => {
            let v: DatasetVersion = Client::new(&conn)
                .get(&format!("{}/{version}", versions_path(&contract)))
                .await?;
            emit(conn.output, &v, |v| {
                print_version(v);
                println!(
                    "path {}{}, checked at {}, freshness {}",
                    v.spec.path,
                    v.spec
                        .upload
                        .as_ref()
                        .map(|u| format!(" (uploaded as {u})"))
                        .unwrap_or_default(),
                    v.spec.checked_at,
                    dash(v.spec.freshness.as_deref())
                );
                let rows: Vec<Vec<String>> = v.spec.report["checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                        vec![
                            text("id"),
                            text("kind"),
                            text("rule"),
                            text("status"),
                            num(c["measured"].as_f64()),
                            text("expected"),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    table(
                        &["CHECK", "KIND", "RULE", "STATUS", "MEASURED", "EXPECTED"],
                        &rows,
                    );
                }
            });
            Ok(0)
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
        DatasetCmd::Profile {
            contract,
            version,
            conn,
        } => {
            let client = Client::new(&conn);
            let version = match version {
                Some(v) => v,
                None => {
                    let list: Vec<DatasetVersion> = client.get(&versions_path(&contract)).await?;
                    list.first().map(|v| v.spec.version).ok_or_else(|| {
                        Failure::new(
                            5,
                            format!("datacontract/{contract} has no dataset versions yet"),
                        )
                    })?
                }
            };
            let p: DatasetProfile = client
                .get(&format!("{}/{version}/profile", versions_path(&contract)))
                .await?;
            emit(conn.output, &p, crate::data::print_profile);
            Ok(0)
        }
        DatasetCmd::Drift {
            contract,
            reference,
            current,
            conn,
        } => {
            let mut query = Vec::new();
            if let Some(r) = reference {
                query.push(format!("reference={r}"));
            }
            if let Some(c) = current {
                query.push(format!("current={c}"));
            }
            let mut url = format!("/api/v1/datacontracts/{}/drift", enc(&contract));
            if !query.is_empty() {
                url.push('?');
                url.push_str(&query.join("&"));
            }
            let d: DatasetDrift = Client::new(&conn).get(&url).await?;
            emit(conn.output, &d, print_drift);
            Ok(if d.verdict == "drift" { 1 } else { 0 })
        }
        DatasetCmd::Reference {
            contract,
            version,
            conn,
        } => {
            let r: DatasetReference = Client::new(&conn)
                .post(
                    &format!("/api/v1/datacontracts/{}/reference", enc(&contract)),
                    &SetReferenceRequest { version },
                )
                .await?;
            emit(conn.output, &r, |r| {
                println!(
                    "datacontract/{}: drift reference is now v{} (set by {} at {})",
                    r.contract, r.version, r.set_by, r.set_at
                );
            });
            Ok(0)
        }
        DatasetCmd::Lineage {
            contract,
            version,
            conn,
        } => {
            let v: serde_json::Value = Client::new(&conn)
                .get(&format!("{}/{version}/lineage", versions_path(&contract)))
                .await?;
            let format = match conn.output {
                Format::Yaml => Format::Yaml,
                _ => Format::Json,
            };
            emit(format, &v, |_| {});
            Ok(0)
        }
    }
}
