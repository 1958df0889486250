//! `plinth contract lint` and `plinth contract check`: ODCS v3 data contracts checked locally
//! against Parquet, CSV or Arrow files, no server needed. Exit codes: 0 clean or passed, 1 a
//! finding or a failed check, 2 could not run.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use plinth_contracts::check::{self, CheckOptions, CheckReport, Status};
use plinth_contracts::odcs::{self, Contract, Level};

use crate::client::{CmdResult, Failure};

/// Writes to stdout, ignoring a closed pipe (`| head`) instead of panicking.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Output of the contract commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    /// For people: one line per check.
    #[value(alias = "table")]
    Text,
    /// One JSON document.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ContractCmd {
    /// Parse and lint an ODCS v3 contract (exit 0 clean, 1 findings, 2 could not read).
    Lint {
        /// The contract (YAML).
        file: PathBuf,
        /// Output: text or json.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutFormat::Text)]
        output: OutFormat,
    },
    /// Check data against a contract in one pass (exit 0 passed, 1 a check failed, 2 could not run).
    Check {
        /// The contract (YAML).
        contract: PathBuf,
        /// Files or directories to check (default: the path of the contract's server).
        data: Vec<PathBuf>,
        /// Which server of the contract gives the data path (default: the first with a path).
        #[arg(long)]
        server: Option<String>,
        /// Which schema object to check (default: the only one, or the one named like the data).
        #[arg(long)]
        object: Option<String>,
        /// Output: text or json.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutFormat::Text)]
        output: OutFormat,
        /// Also write a JUnit XML report here (one testcase per check).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// "Now" for freshness and retention, RFC 3339 (default: the current time).
        #[arg(long)]
        now: Option<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        workers: Option<usize>,
        /// CSV cells read as null (repeatable; default: empty and NA).
        #[arg(long = "null")]
        null_markers: Vec<String>,
    },
}

pub async fn run(cmd: ContractCmd) -> CmdResult {
    match cmd {
        ContractCmd::Lint { file, output } => lint(&file, output),
        ContractCmd::Check {
            contract,
            data,
            server,
            object,
            output,
            junit,
            now,
            workers,
            null_markers,
        } => {
            let args = CheckArgs {
                contract,
                data,
                server,
                object,
                output,
                junit,
                now,
                workers,
                null_markers,
            };
            tokio::task::spawn_blocking(move || check_cmd(args))
                .await
                .map_err(|e| Failure::new(2, format!("the check did not finish: {e}")))?
        }
    }
}

fn lint(file: &Path, output: OutFormat) -> CmdResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::new(2, format!("{}: {e}", file.display())))?;
    let (findings, parsed) = match Contract::from_yaml(&text) {
        Ok(c) => (odcs::lint(&c), true),
        Err(e) => (
            vec![odcs::Finding {
                path: if e.path.is_empty() {
                    "(document)".into()
                } else {
                    e.path.clone()
                },
                level: Level::Error,
                message: e.message.clone(),
            }],
            false,
        ),
    };
    match output {
        OutFormat::Json => {
            let v = serde_json::json!({
                "file": file.display().to_string(),
                "valid": parsed,
                "findings": findings,
            });
            emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            ));
        }
        OutFormat::Text => {
            let mut t = String::new();
            for f in &findings {
                t.push_str(&format!("{}: {f}\n", file.display()));
            }
            if findings.is_empty() {
                t.push_str(&format!("{}: ok\n", file.display()));
            } else {
                let errors = findings.iter().filter(|f| f.level == Level::Error).count();
                t.push_str(&format!(
                    "{} error(s), {} warning(s)\n",
                    errors,
                    findings.len() - errors
                ));
            }
            emit(&t);
        }
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}

struct CheckArgs {
    contract: PathBuf,
    data: Vec<PathBuf>,
    server: Option<String>,
    object: Option<String>,
    output: OutFormat,
    junit: Option<PathBuf>,
    now: Option<String>,
    workers: Option<usize>,
    null_markers: Vec<String>,
}

fn check_cmd(a: CheckArgs) -> CmdResult {
    let contract = Contract::from_file(&a.contract)
        .map_err(|e| Failure::new(2, format!("{}: {e}", a.contract.display())))?;
    let now: DateTime<Utc> = match &a.now {
        None => Utc::now(),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| Failure::new(2, format!("--now {t}: not an rfc 3339 time: {e}")))?
            .with_timezone(&Utc),
    };
    let data = if a.data.is_empty() {
        vec![server_path(&contract, &a.contract, a.server.as_deref())?]
    } else {
        a.data.clone()
    };
    let mut opts = CheckOptions {
        now,
        workers: a.workers.unwrap_or(0),
        object: a.object.clone(),
        ..CheckOptions::default()
    };
    if !a.null_markers.is_empty() {
        opts.null_markers = a.null_markers.clone();
    }
    let tty = std::io::stderr().is_terminal();
    let mut reports = Vec::new();
    for d in &data {
        if tty {
            let label = d.display().to_string();
            opts.progress = Some(Arc::new(move |done, total| {
                let mut e = std::io::stderr();
                let _ = write!(e, "\rchecking {label}: {done}/{total} units");
                if done == total {
                    let _ = writeln!(e);
                }
                let _ = e.flush();
            }));
        }
        reports.push(check::check_path(&contract, d, &opts));
    }
    if let Some(path) = &a.junit {
        std::fs::write(path, junit_xml(&reports))
            .map_err(|e| Failure::new(2, format!("{}: {e}", path.display())))?;
    }
    match a.output {
        OutFormat::Json => {
            let text = if reports.len() == 1 {
                serde_json::to_string_pretty(&reports[0])
            } else {
                serde_json::to_string_pretty(&reports)
            };
            emit(&format!("{}\n", text.unwrap_or_default()));
        }
        OutFormat::Text => {
            for r in &reports {
                emit(&human(r));
            }
        }
    }
    let code = if reports.iter().any(|r| r.status == Status::Error) {
        2
    } else if reports.iter().any(|r| r.status == Status::Failed) {
        1
    } else {
        0
    };
    Ok(code)
}

/// The data path of the contract's server (`--server NAME`, else the first server with a
/// path), relative paths taken from the contract file's folder.
fn server_path(c: &Contract, contract_file: &Path, name: Option<&str>) -> Result<PathBuf, Failure> {
    let server = match name {
        Some(n) => c
            .servers
            .iter()
            .find(|s| s.server == n)
            .ok_or_else(|| Failure::new(2, format!("the contract has no server `{n}`")))?,
        None => c.servers.iter().find(|s| s.path.is_some()).ok_or_else(|| {
            Failure::new(
                2,
                "no DATA given and the contract has no server with a path",
            )
        })?,
    };
    let p = server.path.as_deref().ok_or_else(|| {
        Failure::new(
            2,
            format!(
                "server `{}` ({}) has no local path; give DATA",
                server.server, server.kind
            ),
        )
    })?;
    let p = PathBuf::from(p);
    if p.is_absolute() {
        Ok(p)
    } else {
        let base = contract_file.parent().unwrap_or(Path::new("."));
        Ok(base.join(p))
    }
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Passed => "✓",
        Status::Failed => "✗",
        Status::Warning => "!",
        Status::Error => "E",
        Status::Unsupported => "?",
        Status::NotEvaluated => "-",
    }
}

fn fmt_measured(m: Option<f64>) -> String {
    match m {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Some(x) => format!("{x:.4}"),
    }
}

fn human(r: &CheckReport) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "{}\n",
        format_args!(
            "contract {} v{} · object {} · {} ({} file{}, {} rows)",
            r.contract,
            r.contract_version,
            r.object,
            r.dataset,
            r.files,
            if r.files == 1 { "" } else { "s" },
            r.rows
        )
    ));
    for c in &r.checks {
        t.push_str(&format!(
            "  {} {:<8} {} — measured {} · expected {}{}\n",
            mark(c.status),
            c.status.as_str(),
            c.id,
            fmt_measured(c.measured),
            if c.expected.is_empty() {
                "-"
            } else {
                &c.expected
            },
            if c.message.is_empty() {
                String::new()
            } else {
                format!(" · {}", c.message)
            }
        ));
    }
    if let Some(e) = &r.error {
        t.push_str(&format!("  error: {e}\n"));
    }
    let secs = (r.finished - r.started).num_milliseconds() as f64 / 1000.0;
    t.push_str(&format!(
        "{}: {} passed, {} failed, {} warnings, {} errors, {} unsupported, {} not evaluated ({secs:.2}s)\n",
        r.status.as_str().to_uppercase(),
        r.count(Status::Passed),
        r.count(Status::Failed),
        r.count(Status::Warning),
        r.count(Status::Error),
        r.count(Status::Unsupported),
        r.count(Status::NotEvaluated),
    ));
    t
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite per dataset, one testcase per check. Failed checks are failures,
/// errors (and a run that could not finish) are errors, unsupported and not evaluated are
/// skipped; warnings pass with their message in system-out.
pub fn junit_xml(reports: &[CheckReport]) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = reports
        .iter()
        .map(|r| r.checks.len() + usize::from(r.error.is_some()))
        .sum();
    let failures: usize = reports.iter().map(|r| r.count(Status::Failed)).sum();
    let errors: usize = reports
        .iter()
        .map(|r| r.count(Status::Error) + usize::from(r.error.is_some()))
        .sum();
    x.push_str(&format!(
        "<testsuites name=\"plinth contract check\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">\n"
    ));
    for r in reports {
        let skipped = r.count(Status::Unsupported) + r.count(Status::NotEvaluated);
        let secs = (r.finished - r.started).num_milliseconds() as f64 / 1000.0;
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{skipped}\" time=\"{secs:.3}\" timestamp=\"{}\">\n",
            xml_escape(&format!("{} {} {}", r.contract, r.object, r.dataset)),
            r.checks.len() + usize::from(r.error.is_some()),
            r.count(Status::Failed),
            r.count(Status::Error) + usize::from(r.error.is_some()),
            r.started.format("%Y-%m-%dT%H:%M:%S"),
        ));
        for c in &r.checks {
            let detail = format!(
                "measured {} · expected {} · {}",
                fmt_measured(c.measured),
                c.expected,
                c.message
            );
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\">",
                xml_escape(&format!("{}.{}", r.object, c.kind)),
                xml_escape(&c.id)
            ));
            match c.status {
                Status::Passed => {}
                Status::Warning => x.push_str(&format!(
                    "<system-out>warning: {}</system-out>",
                    xml_escape(&detail)
                )),
                Status::Failed => x.push_str(&format!(
                    "<failure message=\"{}\" type=\"{}\">{}</failure>",
                    xml_escape(&c.message),
                    xml_escape(&c.rule),
                    xml_escape(&detail)
                )),
                Status::Error => x.push_str(&format!(
                    "<error message=\"{}\" type=\"{}\">{}</error>",
                    xml_escape(&c.message),
                    xml_escape(&c.rule),
                    xml_escape(&detail)
                )),
                Status::Unsupported | Status::NotEvaluated => x.push_str(&format!(
                    "<skipped message=\"{}: {}\"/>",
                    c.status.as_str(),
                    xml_escape(&c.message)
                )),
            }
            x.push_str("</testcase>\n");
        }
        if let Some(e) = &r.error {
            x.push_str(&format!(
                "    <testcase classname=\"{}.run\" name=\"read data\"><error message=\"{}\" type=\"run\"/></testcase>\n",
                xml_escape(&r.object),
                xml_escape(e)
            ));
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}
