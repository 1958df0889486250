//! `plinth model`: registered models on the server — versions with their typed fields, diffs,
//! release gates, promotion, approvals, rollback and deprecation.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::Conn;
use crate::client::{Client, CmdResult, Failure, enc};
use crate::output::{dash, emit, table};

/// The typed fields of a version, as flags (`register` and `set`).
#[derive(Args, Debug, Clone, Default)]
pub struct ManifestArgs {
    /// The git commit of the training code.
    #[arg(long)]
    code_commit: Option<String>,
    /// A dataset it was trained on: a Plinth dataset version (NAME-vN) or a URI (repeatable).
    #[arg(long = "dataset")]
    datasets: Vec<String>,
    /// A feature definition it uses (repeatable).
    #[arg(long = "feature")]
    features: Vec<String>,
    /// A prompt, NAME=TEXT (repeatable).
    #[arg(long = "prompt", value_name = "NAME=TEXT")]
    prompts: Vec<String>,
    /// A hyper-parameter, KEY=VALUE (repeatable; adds to the run's params).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// An eval set it was measured on (repeatable).
    #[arg(long = "eval-set")]
    eval_sets: Vec<String>,
    /// An eval metric, KEY=NUMBER (repeatable; adds to the run's metrics).
    #[arg(long = "metric", value_name = "KEY=NUMBER")]
    metrics: Vec<String>,
    /// A deployment setting, KEY=VALUE (repeatable).
    #[arg(long = "deploy", value_name = "KEY=VALUE")]
    deployment: Vec<String>,
}

fn pairs(flag: &str, items: &[String]) -> Result<Map<String, Value>, Failure> {
    let mut m = Map::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Failure::new(3, format!("--{flag} {it:?}: expected KEY=VALUE")))?;
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

impl ManifestArgs {
    /// The `ManifestPatch` JSON: only the fields given.
    fn patch(&self) -> Result<Value, Failure> {
        let mut p = Map::new();
        if let Some(c) = &self.code_commit {
            p.insert("codeCommit".into(), json!(c));
        }
        for (key, list) in [
            ("datasets", &self.datasets),
            ("features", &self.features),
            ("evalSets", &self.eval_sets),
        ] {
            if !list.is_empty() {
                p.insert(key.into(), json!(list));
            }
        }
        for (key, flag, items) in [
            ("prompts", "prompt", &self.prompts),
            ("hyperparameters", "param", &self.params),
            ("deployment", "deploy", &self.deployment),
        ] {
            if !items.is_empty() {
                p.insert(key.into(), Value::Object(pairs(flag, items)?));
            }
        }
        if !self.metrics.is_empty() {
            let mut m = Map::new();
            for (k, v) in pairs("metric", &self.metrics)? {
                let text = v.as_str().unwrap_or_default();
                let x: f64 = text.parse().map_err(|_| {
                    Failure::new(3, format!("--metric {k}={text}: {text:?} is not a number"))
                })?;
                m.insert(k, json!(x));
            }
            p.insert("evalMetrics".into(), Value::Object(m));
        }
        Ok(Value::Object(p))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Staging,
    Canary,
    Production,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Staging => "staging",
            Target::Canary => "canary",
            Target::Production => "production",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ModelCmd {
    /// Registered models with their staging, canary and production versions.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// A model's stages and versions, or one version's typed fields, approvals and deprecation.
    Show {
        name: String,
        version: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Register a new version (the model is created when new) with its typed fields.
    Register {
        name: String,
        /// Where the model's files are: runs:/RUN_ID/PATH, mlflow-artifacts:/..., a URI.
        #[arg(long)]
        source: String,
        /// The MLflow run that trained it.
        #[arg(long)]
        run_id: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The team that owns a new model (default: the token's team; only admins name
        /// another). Its maintainers, or admins, promote, approve, roll back and deprecate.
        #[arg(long)]
        team: Option<String>,
        #[command(flatten)]
        manifest: ManifestArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set typed fields of a version (fields not given are kept).
    Set {
        name: String,
        version: String,
        #[command(flatten)]
        manifest: ManifestArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// What changed between two versions, field by field.
    Diff {
        name: String,
        a: String,
        b: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Evaluate the release gates of a version for a target, without promoting.
    Gates {
        name: String,
        version: String,
        #[arg(long, value_enum)]
        to: Target,
        #[command(flatten)]
        conn: Conn,
    },
    /// Promote a version after evaluating every release gate; prints each verdict.
    Promote {
        name: String,
        version: String,
        #[arg(long, value_enum)]
        to: Target,
        /// Promote although gates failed (admins only; needs --reason; audited).
        #[arg(long = "override")]
        override_gates: bool,
        #[arg(long)]
        reason: Option<String>,
        /// Only promote if the model is still at this generation (see `plinth model show`).
        #[arg(long)]
        expect_generation: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a version (maintainers and admins other than its author).
    Approve {
        name: String,
        version: String,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restore the previous production version in one step.
    Rollback {
        name: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The model's RetrainPolicies and the training jobs each has submitted.
    Retrain {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deprecate a version with a sunset date; lists what still uses it.
    Deprecate {
        name: String,
        version: String,
        /// The day it goes away, YYYY-MM-DD.
        #[arg(long)]
        sunset: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete the artifacts of versions archived, or deprecated past their sunset, longer
    /// ago than the retention (admins).
    Gc(crate::model_gc::GcArgs),
}

fn text(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn stages_line(stages: &Value) -> String {
    let parts: Vec<String> = ["staging", "canary", "production"]
        .iter()
        .filter_map(|t| stages[*t].as_str().map(|v| format!("{t}={v}")))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn print_verdicts(report: &Value) {
    println!(
        "gates of {} version {} for {} (policy {}):",
        text(report, "model"),
        text(report, "version"),
        text(report, "target"),
        dash(report["policy"].as_str())
    );
    for v in report["verdicts"].as_array().into_iter().flatten() {
        println!(
            "  {} {}: {}",
            if v["passed"].as_bool() == Some(true) {
                "PASS"
            } else {
                "FAIL"
            },
            text(v, "gate"),
            text(v, "detail")
        );
    }
}

fn print_version(v: &Value) {
    println!("model {} version {}", text(v, "name"), text(v, "version"));
    println!("  source:   {}", text(v, "source"));
    println!("  run:      {}", dash(v["runId"].as_str()));
    println!("  author:   {}", text(v, "author"));
    println!("  mlflow stage: {}", text(v, "mlflowStage"));
    let list = |k: &str| -> String {
        let items: Vec<String> = strings(&v[k]);
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    println!("  stages:   {}", list("stages"));
    println!("  aliases:  {}", list("aliases"));
    if let Some(d) = v["deprecation"].as_object() {
        println!(
            "  WARNING: deprecated, sunset {}: {}",
            d["sunset"].as_str().unwrap_or_default(),
            d["reason"].as_str().unwrap_or_default()
        );
    }
    let approvals: Vec<String> = v["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| text(a, "by"))
        .collect();
    println!(
        "  approvals: {}",
        if approvals.is_empty() {
            "-".into()
        } else {
            approvals.join(", ")
        }
    );
    let m = &v["manifest"];
    println!("  code commit: {}", dash(m["codeCommit"].as_str()));
    let mut rows = Vec::new();
    for (field, key) in [
        ("datasets", "datasets"),
        ("features", "features"),
        ("eval sets", "evalSets"),
    ] {
        for x in m[key].as_array().into_iter().flatten() {
            rows.push(vec![
                field.to_string(),
                String::new(),
                x.as_str().unwrap_or_default().to_string(),
            ]);
        }
    }
    for (field, key) in [
        ("prompts", "prompts"),
        ("hyperparameters", "hyperparameters"),
        ("eval metrics", "evalMetrics"),
        ("deployment", "deployment"),
    ] {
        for (k, x) in m[key].as_object().into_iter().flatten() {
            let val = match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            rows.push(vec![field.to_string(), k.clone(), val]);
        }
    }
    if !rows.is_empty() {
        table(&["FIELD", "KEY", "VALUE"], &rows);
    }
    for w in m["warnings"].as_array().into_iter().flatten() {
        println!("  warning: {}", w.as_str().unwrap_or_default());
    }
    println!("  lineage: plinth lineage show {}", text(v, "lineageNode"));
}

/// The strings of a JSON array (none when it is not one).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect()
}

fn version_path(name: &str, version: &str) -> String {
    format!("/api/v1/models/{}/versions/{}", enc(name), enc(version))
}

/// POSTs `body` to `path` and shows the answer with `show` (or as JSON with `-o json`).
async fn post_show(
    conn: &Conn,
    path: &str,
    body: &Value,
    show: impl FnOnce(&Value),
) -> Result<Value, Failure> {
    let v: Value = Client::new(conn).post(path, body).await?;
    emit(conn.output, &v, show);
    Ok(v)
}

/// GETs `path` and shows the answer with `show` (or as JSON with `-o json`).
async fn get_show(conn: &Conn, path: &str, show: impl FnOnce(&Value)) -> Result<Value, Failure> {
    let v: Value = Client::new(conn).get(path).await?;
    emit(conn.output, &v, show);
    Ok(v)
}

pub async fn run(cmd: ModelCmd) -> CmdResult {
    match cmd {
        ModelCmd::Gc(args) => crate::model_gc::run(args).await,
        ModelCmd::List { conn } => {
            get_show(&conn, "/api/v1/models", |v| {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        vec![
                            text(m, "name"),
                            dash(m["team"].as_str()),
                            dash(m["latestVersion"].as_str()),
                            stages_line(&m["stages"]),
                        ]
                    })
                    .collect();
                table(&["NAME", "TEAM", "LATEST", "STAGES"], &rows);
            })
            .await?;
            Ok(0)
        }
        ModelCmd::Show {
            name,
            version,
            conn,
        } => {
            let client = Client::new(&conn);
            match version {
                Some(ver) => {
                    let v: Value = client.get(&version_path(&name, &ver)).await?;
                    emit(conn.output, &v, print_version);
                }
                None => {
                    let v: Value = client
                        .get(&format!("/api/v1/models/{}", enc(&name)))
                        .await?;
                    emit(conn.output, &v, |m| {
                        println!(
                            "model {}  team {}  generation {}  policy {}",
                            text(m, "name"),
                            dash(m["team"].as_str()),
                            text(m, "generation"),
                            dash(m["policy"].as_str())
                        );
                        println!("  stages: {}", stages_line(&m["stages"]));
                        let hist: Vec<String> = strings(&m["productionHistory"]);
                        if !hist.is_empty() {
                            println!("  earlier production: {}", hist.join(", "));
                        }
                        let rows: Vec<Vec<String>> = m["versions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|v| {
                                let stages: Vec<&str> = v["stages"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(Value::as_str)
                                    .collect();
                                vec![
                                    text(v, "version"),
                                    if stages.is_empty() {
                                        "-".into()
                                    } else {
                                        stages.join(",")
                                    },
                                    text(v, "mlflowStage"),
                                    text(v, "author"),
                                    v["approvals"].as_array().map_or(0, Vec::len).to_string(),
                                    v["deprecation"]["sunset"]
                                        .as_str()
                                        .map(|s| format!("sunset {s}"))
                                        .unwrap_or_else(|| "-".into()),
                                ]
                            })
                            .collect();
                        table(
                            &[
                                "VERSION",
                                "STAGES",
                                "MLFLOW STAGE",
                                "AUTHOR",
                                "APPROVALS",
                                "DEPRECATED",
                            ],
                            &rows,
                        );
                    });
                }
            }
            Ok(0)
        }
        ModelCmd::Register {
            name,
            source,
            run_id,
            description,
            team,
            manifest,
            conn,
        } => {
            let body = json!({
                "source": source, "runId": run_id, "description": description,
                "team": team, "manifest": manifest.patch()?,
            });
            let path = format!("/api/v1/models/{}/versions", enc(&name));
            post_show(&conn, &path, &body, |v| {
                println!(
                    "registered {} version {}",
                    text(v, "name"),
                    text(v, "version")
                );
            })
            .await?;
            Ok(0)
        }
        ModelCmd::Set {
            name,
            version,
            manifest,
            conn,
        } => {
            post_show(
                &conn,
                &format!("{}/manifest", version_path(&name, &version)),
                &manifest.patch()?,
                print_version,
            )
            .await?;
            Ok(0)
        }
        ModelCmd::Diff { name, a, b, conn } => {
            get_show(
                &conn,
                &format!(
                    "/api/v1/models/{}/diff?a={}&b={}",
                    enc(&name),
                    enc(&a),
                    enc(&b)
                ),
                |v| {
                    let rows: Vec<Vec<String>> = v["changes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            vec![
                                text(c, "field"),
                                dash(c["key"].as_str()),
                                text(c, "change"),
                                dash(c["a"].as_str()),
                                dash(c["b"].as_str()),
                            ]
                        })
                        .collect();
                    if rows.is_empty() {
                        println!(
                            "{} versions {} and {}: no differences",
                            text(v, "model"),
                            text(v, "a"),
                            text(v, "b")
                        );
                    } else {
                        let (va, vb) = (format!("V{}", text(v, "a")), format!("V{}", text(v, "b")));
                        table(&["FIELD", "KEY", "CHANGE", &va, &vb], &rows);
                    }
                },
            )
            .await?;
            Ok(0)
        }
        ModelCmd::Gates {
            name,
            version,
            to,
            conn,
        } => {
            let v = get_show(
                &conn,
                &format!("{}/gates?to={}", version_path(&name, &version), to.as_str()),
                print_verdicts,
            )
            .await?;
            Ok(if v["passed"].as_bool() == Some(true) {
                0
            } else {
                6
            })
        }
        ModelCmd::Promote {
            name,
            version,
            to,
            override_gates,
            reason,
            expect_generation,
            conn,
        } => {
            let body = json!({
                "to": to.as_str(), "override": override_gates, "reason": reason,
                "expectedGeneration": expect_generation,
            });
            let path = format!("{}/promote", version_path(&name, &version));
            post_show(&conn, &path, &body, |v| {
                print_verdicts(&v["gates"]);
                println!(
                    "promoted {} version {} to {}{}{}",
                    text(&v["gates"], "model"),
                    text(&v["gates"], "version"),
                    text(&v["gates"], "target"),
                    v["previous"]
                        .as_str()
                        .map(|p| format!(" (was version {p})"))
                        .unwrap_or_default(),
                    if v["overridden"].as_bool() == Some(true) {
                        " OVERRIDING failed gates"
                    } else {
                        ""
                    }
                );
            })
            .await?;
            Ok(0)
        }
        ModelCmd::Approve {
            name,
            version,
            comment,
            conn,
        } => {
            post_show(
                &conn,
                &format!("{}/approve", version_path(&name, &version)),
                &json!({"comment": comment}),
                |v| {
                    let by: Vec<String> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| text(a, "by"))
                        .collect();
                    println!(
                        "approved {name} version {version}; approvals: {}",
                        by.join(", ")
                    );
                },
            )
            .await?;
            Ok(0)
        }
        ModelCmd::Rollback { name, reason, conn } => {
            post_show(
                &conn,
                &format!("/api/v1/models/{}/rollback", enc(&name)),
                &json!({"reason": reason}),
                |v| {
                    println!(
                        "rolled back {}: production is version {} (was {})",
                        text(v, "model"),
                        text(v, "to"),
                        text(v, "from")
                    );
                },
            )
            .await?;
            Ok(0)
        }
        ModelCmd::Retrain { name, conn } => {
            get_show(
                &conn,
                &format!("/api/v1/models/{}/retrain", enc(&name)),
                |v| {
                    let rows: Vec<Vec<String>> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            let st = &p["status"];
                            let sp = &p["spec"];
                            let mut triggers = Vec::new();
                            if let Some(e) = sp["everySeconds"].as_u64() {
                                triggers.push(format!("every {e}s"));
                            }
                            if let Some(d) = sp["onDataset"].as_str() {
                                triggers.push(format!("new {d}"));
                            }
                            if let Some(d) = sp["onDrift"].as_str() {
                                triggers.push(format!("drift of {d}"));
                            }
                            if let Some(d) = sp["onCanaryRollback"].as_str() {
                                triggers.push(format!("canary rollback of {d}"));
                            }
                            let trigger = if triggers.is_empty() {
                                "-".to_string()
                            } else {
                                triggers.join(", ")
                            };
                            vec![
                                text(p, "policy"),
                                trigger,
                                text(st, "runs"),
                                dash(
                                    st["jobs"]
                                        .as_array()
                                        .and_then(|j| j.last())
                                        .and_then(Value::as_str),
                                ),
                                dash(st["lastTrigger"].as_str()),
                                dash(st["lastError"].as_str()),
                            ]
                        })
                        .collect();
                    table(
                        &[
                            "POLICY",
                            "TRIGGER",
                            "RUNS",
                            "LAST JOB",
                            "LAST TRIGGER",
                            "LAST ERROR",
                        ],
                        &rows,
                    );
                },
            )
            .await?;
            Ok(0)
        }
        ModelCmd::Deprecate {
            name,
            version,
            sunset,
            reason,
            conn,
        } => {
            post_show(
                &conn,
                &format!("{}/deprecate", version_path(&name, &version)),
                &json!({"sunset": sunset, "reason": reason}),
                |v| {
                    println!("{}", text(v, "warning"));
                    let users: Vec<String> = strings(&v["deprecation"]["users"]);
                    if users.is_empty() {
                        println!("  nothing uses it");
                    } else {
                        println!("  still used by:");
                        for u in users {
                            println!("    {u}");
                        }
                    }
                },
            )
            .await?;
            Ok(0)
        }
    }
}
