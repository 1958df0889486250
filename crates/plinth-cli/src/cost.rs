//! `plinth cost`: cost reports (table, CSV or JSON), unit economics, FOCUS exports (CSV or
//! Parquet), budgets with their spend and forecast, and usage ingestion from other meters.
//!
//! These commands take `-o` for their own output (a report format, or the export's file), so
//! they carry `--server` and `--token` without the shared `-o` of other commands.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use plinth_cost::{BudgetSpec, BudgetStatus, Report, UnitCosts};
use serde::Deserialize;
use serde_json::Value;

use crate::Conn;
use crate::client::{Client, CmdResult, Failure, enc};
use crate::output::{Format, table};

/// Where the server is and who we are (as `Conn`, without its `-o`).
#[derive(Args, Debug, Clone)]
pub struct CostConn {
    /// Server URL (default: the one saved by `plinth login`, else http://127.0.0.1:7878).
    #[arg(long, env = "PLINTH_SERVER")]
    server: Option<String>,
    /// Bearer token (default: the one saved by `plinth login`).
    #[arg(long, env = "PLINTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl CostConn {
    fn client(&self) -> Client {
        Client::new(&Conn {
            server: self.server.clone(),
            token: self.token.clone(),
            output: Format::Json,
        })
    }
}

/// Which time a command covers: `--period 2026-11` (a month), `--period 2026-11-05` (a day),
/// `--from D --to D` (days, both included); default the current month (UTC).
#[derive(Args, Debug, Clone, Default)]
pub struct PeriodArgs {
    /// A month (2026-11) or a day (2026-11-05), UTC.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    period: Option<String>,
    /// First day (2026-11-01), with --to.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Last day, included (2026-11-07), with --from.
    #[arg(long, requires = "from")]
    to: Option<String>,
}

impl PeriodArgs {
    fn query(&self) -> String {
        let mut q = String::new();
        for (k, v) in [
            ("period", &self.period),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        q
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    /// Cost per job (all its attempts, preempted and retried ones included).
    TrainingRun,
    /// Training plus serving cost per model version.
    ModelVersion,
    /// Serving cost per 1,000 inferences per deployment and version.
    ThousandInferences,
    /// Average cost per day per team.
    TeamDay,
}

impl MetricArg {
    fn as_str(self) -> &'static str {
        match self {
            MetricArg::TrainingRun => "training_run",
            MetricArg::ModelVersion => "model_version",
            MetricArg::ThousandInferences => "thousand_inferences",
            MetricArg::TeamDay => "team_day",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Parquet,
}

#[derive(Subcommand, Debug)]
pub enum CostCmd {
    /// Cost grouped by tags, pool or day: allocated (max(request, usage) × price), idle
    /// capacity apart or shared, untagged spend flagged.
    Report {
        /// Comma-separated: team, project, env, model, owner, pool, day.
        #[arg(long, default_value = "team")]
        by: String,
        #[command(flatten)]
        period: PeriodArgs,
        /// Share each pool-day's idle cost among its users in proportion to their cost.
        #[arg(long)]
        share_idle: bool,
        /// table, csv or json.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = ReportFormat::Table)]
        output: ReportFormat,
        #[command(flatten)]
        conn: CostConn,
    },
    /// Unit economics against the previous window of the same length.
    Units {
        #[arg(long, value_enum)]
        metric: MetricArg,
        #[command(flatten)]
        period: PeriodArgs,
        #[arg(long)]
        share_idle: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = TableOrJson::Table)]
        output: TableOrJson,
        #[command(flatten)]
        conn: CostConn,
    },
    /// Write the period's cost as a FOCUS file (FinOps Open Cost and Usage Specification).
    Export {
        /// FOCUS rows (the only export format; kept for clarity in scripts).
        #[arg(long)]
        focus: bool,
        /// 1.0 (default) or 1.2 (adds the columns of 1.1 and 1.2).
        #[arg(long, default_value = "1.0")]
        focus_version: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        #[command(flatten)]
        period: PeriodArgs,
        /// The file to write (`-` for stdout).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[command(flatten)]
        conn: CostConn,
    },
    /// Budgets with their spend in the current period, forecast and thresholds.
    Budgets {
        /// One budget.
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = TableOrJson::Table)]
        output: TableOrJson,
        #[command(flatten)]
        conn: CostConn,
    },
    /// Record usage intervals from another meter (admins): a JSON file `{"records": [...]}`
    /// (or an array of records); see docs/cost.md for the fields.
    Ingest {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        conn: CostConn,
    },
}

/// `GET /api/v1/cost/report` as JSON.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CostReport {
    start: String,
    end: String,
    report: Report,
    #[serde(default)]
    untagged_records: Vec<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct UnitReport {
    units: UnitCosts,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct BudgetView {
    pub name: String,
    pub spec: BudgetSpec,
    #[serde(default)]
    pub status: Option<BudgetStatus>,
    #[serde(default)]
    pub error: Option<String>,
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn money(x: f64) -> String {
    plinth_cost::format_amount(x)
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

pub async fn run(cmd: CostCmd) -> CmdResult {
    match cmd {
        CostCmd::Report {
            by,
            period,
            share_idle,
            output,
            conn,
        } => {
            let client = conn.client();
            let path = format!(
                "/api/v1/cost/report?by={}&share_idle={share_idle}{}",
                enc(&by),
                period.query()
            );
            if output == ReportFormat::Csv {
                let (text, _) = client.get_text(&format!("{path}&format=csv")).await?;
                print!("{text}");
                return Ok(0);
            }
            let r: CostReport = client.get(&path).await?;
            if output == ReportFormat::Json {
                print_json(&r);
                return Ok(0);
            }
            print_report(&r);
            warn_all(&r.warnings);
            Ok(0)
        }
        CostCmd::Units {
            metric,
            period,
            share_idle,
            output,
            conn,
        } => {
            let client = conn.client();
            let path = format!(
                "/api/v1/cost/units?metric={}&share_idle={share_idle}{}",
                metric.as_str(),
                period.query()
            );
            let r: UnitReport = client.get(&path).await?;
            match output {
                TableOrJson::Json => print_json(&r),
                TableOrJson::Table => print_units(&r.units),
            }
            warn_all(&r.warnings);
            Ok(0)
        }
        CostCmd::Export {
            focus: _,
            focus_version,
            format,
            period,
            output,
            conn,
        } => {
            let client = conn.client();
            let format = match format {
                ExportFormat::Csv => "csv",
                ExportFormat::Parquet => "parquet",
            };
            let path = format!(
                "/api/v1/cost/export?focus={}&format={format}{}",
                enc(&focus_version),
                period.query()
            );
            if output.as_os_str() == "-" {
                let mut out = std::io::stdout();
                client.get_into(&path, &mut out).await?;
                return Ok(0);
            }
            // Written as it arrives into `<file>.part`, renamed once complete: a cut-off
            // download leaves no file that looks whole.
            let mut part = output.clone().into_os_string();
            part.push(".part");
            let part = PathBuf::from(part);
            let file = std::fs::File::create(&part)
                .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", part.display())))?;
            let mut out = std::io::BufWriter::new(file);
            let written = match client.get_into(&path, &mut out).await {
                Ok(n) => n,
                Err(e) => {
                    drop(out);
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            };
            drop(out);
            std::fs::rename(&part, &output)
                .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", output.display())))?;
            eprintln!(
                "wrote FOCUS {focus_version} {format} ({written} bytes) to {}",
                output.display()
            );
            Ok(0)
        }
        CostCmd::Budgets { name, output, conn } => {
            let client = conn.client();
            let mut views: Vec<BudgetView> = client.get("/api/v1/cost/budgets").await?;
            if let Some(n) = &name {
                views.retain(|v| &v.name == n);
                if views.is_empty() {
                    return Err(Failure::new(5, format!("Budget {n:?} not found")));
                }
            }
            match output {
                TableOrJson::Json => print_json(&views),
                TableOrJson::Table => print_budgets(&views, name.is_some()),
            }
            Ok(0)
        }
        CostCmd::Ingest { file, conn } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::new(3, format!("cannot read {}: {e}", file.display())))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| Failure::new(3, format!("{}: not valid JSON: {e}", file.display())))?;
            let body = match value {
                Value::Array(records) => serde_json::json!({ "records": records }),
                other => other,
            };
            let out: Value = conn.client().post("/api/v1/cost/usage", &body).await?;
            println!(
                "{} stored, {} already stored",
                out["inserted"], out["duplicates"]
            );
            Ok(0)
        }
    }
}

fn print_report(r: &CostReport) {
    let rep = &r.report;
    println!(
        "cost {} .. {} ({}, idle {})",
        r.start,
        r.end,
        rep.currency,
        if rep.share_idle { "shared" } else { "apart" }
    );
    let headers = rep.headers();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(&header_refs, &rep.cells());
    println!(
        "allocated {}  idle {}  untagged {}  total {} {}",
        money(rep.allocated_total),
        money(rep.idle_total),
        money(rep.untagged_total),
        money(rep.total),
        rep.currency
    );
    if !r.untagged_records.is_empty() {
        println!(
            "untagged spend (no team tag) from {} usage record(s): {}",
            r.untagged_records.len(),
            r.untagged_records.join(", ")
        );
    }
}

fn opt_money(x: Option<f64>) -> String {
    x.map(money).unwrap_or_else(|| "-".into())
}

fn print_units(u: &UnitCosts) {
    let rows: Vec<Vec<String>> = u
        .rows
        .iter()
        .map(|r| {
            vec![
                r.key.join(" / "),
                money(r.cost),
                format!("{}", r.units),
                opt_money(r.unit_cost),
                opt_money(r.previous_unit_cost),
                r.trend
                    .map(|t| format!("{:+.1}%", t * 100.0))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["KEY", "COST", "UNITS", "UNIT COST", "BEFORE", "TREND"],
        &rows,
    );
    println!(
        "overall {} {} (before {}{})",
        opt_money(u.overall),
        u.currency,
        opt_money(u.previous_overall),
        u.trend
            .map(|t| format!(", {:+.1}%", t * 100.0))
            .unwrap_or_default()
    );
}

/// Budgets as a table (with `detail`, each threshold and warning too).
pub fn print_budgets(views: &[BudgetView], detail: bool) {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let scope = v.spec.scope_text(",").unwrap_or_else(|| "all".into());
            let period = v.spec.period.as_str().to_string();
            match &v.status {
                Some(s) => vec![
                    v.name.clone(),
                    scope,
                    period,
                    format!("{} {}", money(s.spent), s.currency),
                    money(s.amount),
                    format!("{:.1}%", s.percent_used),
                    format!("{:.1}%", s.percent_forecast),
                    s.thresholds
                        .iter()
                        .filter(|t| t.crossed)
                        .map(|t| format!("{}%", t.percent))
                        .collect::<Vec<_>>()
                        .join(","),
                ],
                None => vec![
                    v.name.clone(),
                    scope,
                    period,
                    "-".into(),
                    money(v.spec.amount),
                    "-".into(),
                    "-".into(),
                    v.error.clone().unwrap_or_default(),
                ],
            }
        })
        .map(|mut r| {
            if r[7].is_empty() {
                r[7] = "-".into();
            }
            r
        })
        .collect();
    table(
        &[
            "NAME", "SCOPE", "PERIOD", "SPENT", "AMOUNT", "USED", "FORECAST", "CROSSED",
        ],
        &rows,
    );
    for v in views {
        let Some(s) = &v.status else { continue };
        if detail {
            println!(
                "budget {}: run rate {}/h, forecast {} {} at {}",
                v.name,
                money(s.run_rate_per_hour),
                money(s.forecast),
                s.currency,
                s.period.end.to_rfc3339()
            );
            for t in &s.thresholds {
                println!(
                    "  {:>6}% {:<22} {}",
                    t.percent,
                    serde_json::to_value(t.action)
                        .ok()
                        .and_then(|a| a.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    if t.crossed {
                        "crossed".to_string()
                    } else if let Some(at) = t.forecast_crossing {
                        format!("forecast to cross at {}", at.to_rfc3339())
                    } else {
                        "not reached".to_string()
                    }
                );
            }
        }
        warn_all(&s.warnings);
    }
}

/// `plinth get budgets [NAME]` and `plinth describe budget NAME`: the budget table with spend
/// and forecast.
pub async fn get_budgets(conn: &Conn, name: Option<&str>) -> CmdResult {
    let client = Client::new(conn);
    let mut views: Vec<BudgetView> = client.get("/api/v1/cost/budgets").await?;
    if let Some(n) = name {
        views.retain(|v| v.name == n);
        if views.is_empty() {
            return Err(Failure::new(
                5,
                format!("Budget {n:?} not found (not_found)"),
            ));
        }
    }
    print_budgets(&views, name.is_some());
    Ok(0)
}

/// The demo job that spends something: one core for 15 seconds, tagged with a model.
const DEMO_JOB: &str = "train-demo";
const DEMO_BUDGET: &str = "research-daily";

/// `plinth up`'s cost demo: a 15-second training job of team research and a daily budget for
/// that team sized so the job's spend (one core of the `local` pool for 15 s) crosses its 50%
/// notify threshold; then where to look. Both are created once per data dir.
pub async fn up_demo(client: &Client) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    // The `local` pool costs 0.10 per node-hour, spread over its cores; 20 core-seconds.
    let amount = 0.1 / cpus * 20.0 / 3600.0;
    let budget = serde_json::json!({
        "apiVersion": "plinth/v1",
        "kind": "Budget",
        "metadata": {"name": DEMO_BUDGET, "labels": {"source": "plinth-up"}},
        "spec": {
            "scope": {"team": "research"},
            "period": "day",
            "amount": amount,
            "currency": "USD",
            "thresholds": [
                {"percent": 50, "action": "notify"},
                {"percent": 100, "action": "require_approval"},
            ],
            "approvalOver": 1.0,
        }
    });
    let exists = client
        .get::<Value>(&format!("/api/v1/resources/budgets/{DEMO_BUDGET}"))
        .await
        .is_ok();
    if !exists {
        let body = plinth_types::api::ApplyRequest {
            documents: vec![plinth_types::api::SourcedDocument {
                file: Some("plinth up (cost demo)".into()),
                index: Some(1),
                document: budget,
            }],
            dry_run: false,
        };
        if let Err(e) = client.post::<_, Value>("/api/v1/apply", &body).await {
            eprintln!("plinth: demo budget not applied: {}", e.message);
            return;
        }
    }
    let job_exists = client
        .get::<Value>(&format!("/api/v1/jobs/{DEMO_JOB}"))
        .await
        .is_ok();
    if !job_exists {
        let req = serde_json::json!({
            "name": DEMO_JOB,
            "spec": {
                "command": ["sh", "-c", "echo training for 15 seconds; sleep 15; echo done"],
                "team": "research",
                "queue": "research-training",
                "class": "training",
                "maxRuntime": "2m",
                "tags": {"source": "plinth-up", "model": "demo-llm", "project": "demo"},
            }
        });
        if let Err(e) = client.post::<_, Value>("/api/v1/jobs", &req).await {
            eprintln!("plinth: demo training job not submitted: {}", e.message);
        }
    }
    println!(
        "plinth: budget {DEMO_BUDGET} ({amount:.6} USD a day for team research) crosses its 50% threshold once the {DEMO_JOB} job has run"
    );
    println!(
        "plinth: cost: plinth cost report --by team,model --share-idle; plinth get budgets; console {}/console/cost",
        client.server
    );
    println!(
        "plinth: cost of demo-chat's requests at its token prices: plinth cost units --metric thousand-inferences"
    );
}
