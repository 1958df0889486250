//! Console pages for jobs: the list, and one job with its attempts and the tail of its log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_core::CoreError;
use plinth_exec::LogStream;
use plinth_types::job::Job;
use serde::Serialize;

use super::PageResult;
use super::render::{OrPage, page};
use super::session::Session;
use super::views::Me;
use crate::AppState;

/// The last bytes of the log shown on a job's page.
const LOG_TAIL: u64 = 16 * 1024;

#[derive(Debug, Serialize)]
struct JobRow {
    name: String,
    team: String,
    queue: String,
    state: String,
    attempts: usize,
    command: String,
    reason: String,
    submitted_at: String,
}

fn row(j: &Job) -> JobRow {
    JobRow {
        name: j.name.clone(),
        team: j.spec.team.clone(),
        queue: j.spec.queue.clone(),
        state: j.status.state.as_str().to_string(),
        attempts: j.status.attempts.len(),
        command: j.spec.command.join(" "),
        reason: if j.status.state.is_terminal() {
            j.status.message.clone()
        } else {
            j.status
                .wait_reason
                .clone()
                .or_else(|| j.status.message.clone())
        }
        .unwrap_or_default(),
        submitted_at: j.status.submitted_at.clone(),
    }
}

fn unavailable() -> CoreError {
    CoreError::invalid("the job controller does not run in this server")
}

#[derive(Debug, Serialize)]
struct JobsPage {
    jobs: Vec<JobRow>,
}

pub(super) async fn jobs(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let jobs = match &s.jobs {
        Some(c) => c.list(&who, None, None).await,
        None => Err(unavailable()),
    }
    .or_page(&who)?;
    let data = JobsPage {
        jobs: jobs.iter().map(row).collect(),
    };
    Ok(page(
        StatusCode::OK,
        "jobs.html",
        Some(&Me::from(&who)),
        "jobs",
        &data,
    ))
}

#[derive(Debug, Serialize)]
struct JobPage {
    job: JobRow,
    spec: serde_json::Value,
    attempts: Vec<plinth_types::job::Attempt>,
    stdout: String,
    stderr: String,
    running: bool,
}

async fn tail(s: &AppState, who: &plinth_types::Identity, j: &Job, stream: LogStream) -> String {
    let Some(c) = &s.jobs else {
        return String::new();
    };
    // Read from the start, keep the last LOG_TAIL bytes (the executor caps logs per attempt).
    let mut offset = 0;
    let mut out: Vec<u8> = Vec::new();
    for _ in 0..32 {
        match c.logs(who, &j.name, stream, offset, None).await {
            Ok((data, next, _)) => {
                if data.is_empty() {
                    break;
                }
                out.extend_from_slice(&data);
                if out.len() as u64 > LOG_TAIL {
                    let cut = out.len() - LOG_TAIL as usize;
                    out.drain(..cut);
                }
                offset = next;
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) async fn job_detail(
    State(s): State<AppState>,
    Session(who): Session,
    Path(name): Path<String>,
) -> PageResult {
    let j = match &s.jobs {
        Some(c) => c.get(&who, &name).await,
        None => Err(unavailable()),
    }
    .or_page(&who)?;
    let stdout = tail(&s, &who, &j, LogStream::Stdout).await;
    let stderr = tail(&s, &who, &j, LogStream::Stderr).await;
    let data = JobPage {
        job: row(&j),
        spec: serde_json::to_value(&j.spec).unwrap_or_default(),
        attempts: j.status.attempts.clone(),
        stdout,
        stderr,
        running: !j.status.state.is_terminal(),
    };
    Ok(page(
        StatusCode::OK,
        "job.html",
        Some(&Me::from(&who)),
        "jobs",
        &data,
    ))
}
