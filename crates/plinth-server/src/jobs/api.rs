//! `/api/v1/jobs`: submit, list, show, cancel, logs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plinth_exec::LogStream;
use plinth_types::ErrorCode;
use plinth_types::job::{Job, SubmitJobRequest, SubmitJobsRequest};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::Jobs;
use crate::AppState;
use crate::api::parse_json;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", get(list_jobs).post(submit_job))
        .route("/api/v1/jobs:batch", post(submit_jobs))
        .route("/api/v1/jobs/{name}", get(get_job))
        .route("/api/v1/jobs/{name}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{name}/logs", get(job_logs))
        .route("/api/v1/jobs/{name}/events", get(job_events))
        .route(
            "/api/v1/pools/{name}/nodes/{node}/interrupt",
            post(interrupt_node),
        )
}

fn controller(s: &AppState) -> Result<&Arc<Jobs>, ApiErrorResponse> {
    s.jobs.as_ref().ok_or_else(|| {
        ApiErrorResponse::new(
            ErrorCode::Unavailable,
            "the job controller does not run in this server",
        )
    })
}

/// Submits a job. The scheduler checks at once that some pool could ever run it: a request
/// no pool can satisfy (too many GPUs or CPUs, an unknown GPU type) is rejected with the
/// reason. Members of the job's team and admins.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body = SubmitJobRequest,
    responses((status = 201, body = Job), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 409, body = plinth_types::ApiError)))]
pub async fn submit_job(
    State(s): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Job>), ApiErrorResponse> {
    let req: SubmitJobRequest = parse_json(&body)?;
    let jobs = controller(&s)?;
    Ok((StatusCode::CREATED, Json(jobs.submit(&who, req).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmitJobsQuery {
    /// `true`: answer each stored job with its `name` and `generation` only, for a client
    /// that does not read the jobs back (the full answer encodes every job).
    #[serde(default)]
    pub brief: bool,
}

/// A stored job in the `brief` answer of a batch submit.
#[derive(Serialize)]
struct SubmittedJob<'a> {
    name: &'a str,
    generation: i64,
}

/// Submits up to 10,000 jobs at once, each checked as by `POST /api/v1/jobs`, and stores
/// them in one transaction: all of them, or (on any problem, named by the job's index) none.
/// For load generators and pipelines that submit many jobs in one instant. Answers the jobs
/// as stored; with `brief=true`, each job's `name` and `generation` only.
#[utoipa::path(post, path = "/api/v1/jobs:batch", tag = "jobs", security(("bearer" = [])),
    params(SubmitJobsQuery),
    request_body = SubmitJobsRequest,
    responses((status = 201, body = Vec<Job>), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 409, body = plinth_types::ApiError)))]
pub async fn submit_jobs(
    State(s): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<SubmitJobsQuery>,
    body: Bytes,
) -> Result<Response, ApiErrorResponse> {
    let req: SubmitJobsRequest = parse_json(&body)?;
    let jobs = controller(&s)?;
    let stored = jobs.submit_many(&who, req.jobs, false).await?;
    if q.brief {
        let brief: Vec<SubmittedJob<'_>> = stored
            .iter()
            .map(|j| SubmittedJob {
                name: &j.name,
                generation: j.generation,
            })
            .collect();
        return Ok((StatusCode::CREATED, Json(brief)).into_response());
    }
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// Only jobs of this team.
    pub team: Option<String>,
    /// Only jobs in this state (pending, admitted, running, succeeded, failed, cancelled, lost).
    pub state: Option<String>,
}

/// Jobs the caller may read, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    params(JobFilter),
    responses((status = 200, body = Vec<Job>), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError)))]
pub async fn list_jobs(
    State(s): State<AppState>,
    Caller(who): Caller,
    Query(f): Query<JobFilter>,
) -> Result<Json<Vec<Job>>, ApiErrorResponse> {
    let jobs = controller(&s)?;
    Ok(Json(
        jobs.list(&who, f.team.as_deref(), f.state.as_deref())
            .await?,
    ))
}

/// One job: spec, state, attempts and the reason it waits.
#[utoipa::path(get, path = "/api/v1/jobs/{name}", tag = "jobs", security(("bearer" = [])),
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = Job), (status = 401, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError)))]
pub async fn get_job(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Json<Job>, ApiErrorResponse> {
    let jobs = controller(&s)?;
    Ok(Json(jobs.get(&who, &name).await?))
}

/// Cancels a job: a waiting one at once, a running one after its process group stopped
/// (SIGTERM, then SIGKILL after the grace). Members of the job's team and admins.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = Job), (status = 401, body = plinth_types::ApiError),
        (status = 403, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError),
        (status = 409, body = plinth_types::ApiError)))]
pub async fn cancel_job(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Json<Job>, ApiErrorResponse> {
    let jobs = controller(&s)?;
    Ok(Json(jobs.cancel(&who, &name).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// `stdout` (default) or `stderr`.
    pub stream: Option<String>,
    /// Byte offset to read from (default 0).
    pub offset: Option<u64>,
    /// Attempt number (default: the latest).
    pub attempt: Option<u32>,
    /// Pod (rank) of a gang job, 0 to nodes − 1 (default 0).
    pub pod: Option<u32>,
}

/// Up to 1 MiB of an attempt's log from `offset`, as text. `X-Plinth-Next-Offset` is where
/// to read next; `X-Plinth-Log-Complete: true` once the attempt ended and all was read.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/logs", tag = "jobs", security(("bearer" = [])),
    params(("name" = String, Path, description = "the job's name"), LogQuery),
    responses((status = 200, description = "log text", body = String, content_type = "text/plain"),
        (status = 400, body = plinth_types::ApiError), (status = 401, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError)))]
pub async fn job_logs(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiErrorResponse> {
    let stream = match q.stream.as_deref() {
        None | Some("stdout") => LogStream::Stdout,
        Some("stderr") => LogStream::Stderr,
        Some(other) => {
            return Err(ApiErrorResponse::new(
                ErrorCode::InvalidArgument,
                format!("stream: {other:?} is not stdout or stderr"),
            ));
        }
    };
    let jobs = controller(&s)?;
    let (data, next, complete) = jobs
        .logs(
            &who,
            &name,
            stream,
            q.offset.unwrap_or(0),
            q.attempt,
            q.pod.unwrap_or(0),
        )
        .await?;
    let mut resp = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        String::from_utf8_lossy(&data).into_owned(),
    )
        .into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&next.to_string()) {
        h.insert("x-plinth-next-offset", v);
    }
    h.insert(
        "x-plinth-log-complete",
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    Ok(resp)
}

/// What an interruption stopped.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Interrupted {
    pub pool: String,
    pub node: String,
    /// Jobs whose attempts were stopped; they wait again and resume from their checkpoint
    /// directory in their next attempt.
    pub jobs: Vec<String>,
}

/// Simulates a spot interruption of one node of a local pool (`<pool>-<i>`): its attempts are
/// stopped with reason `interrupted`, their jobs wait again keeping their place, and a
/// replacement node joins the pool. Admins only.
#[utoipa::path(post, path = "/api/v1/pools/{name}/nodes/{node}/interrupt", tag = "jobs", security(("bearer" = [])),
    params(("name" = String, Path, description = "the pool's name"), ("node" = String, Path, description = "the node, e.g. local-0")),
    responses((status = 200, body = Interrupted), (status = 401, body = plinth_types::ApiError),
        (status = 403, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn interrupt_node(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((pool, node)): Path<(String, String)>,
) -> Result<Json<Interrupted>, ApiErrorResponse> {
    let jobs = controller(&s)?;
    let names = jobs.interrupt_node(&who, &pool, &node).await?;
    Ok(Json(Interrupted {
        pool,
        node,
        jobs: names,
    }))
}

/// A response body fed by a channel: the server-sent event stream.
struct EventBody(tokio::sync::mpsc::Receiver<axum::body::Bytes>);

impl axum::body::HttpBody for EventBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// The job's changes as server-sent events: an `event: job` with the whole job (as
/// `GET /api/v1/jobs/{name}` returns it) now and on every change, a comment every 15 s to keep
/// the connection open; the stream ends after the job's final state.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/events", tag = "jobs", security(("bearer" = [])),
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, description = "server-sent events", body = String, content_type = "text/event-stream"),
        (status = 401, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn job_events(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiErrorResponse> {
    let jobs = Arc::clone(controller(&s)?);
    // Fails here (404) when the caller may not read it.
    let first = jobs.get(&who, &name).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut last = -1;
        let mut current: Result<Job, plinth_core::CoreError> = Ok(first);
        let mut quiet = 0u32;
        loop {
            match current {
                Ok(job) => {
                    if job.generation != last {
                        last = job.generation;
                        quiet = 0;
                        let data = serde_json::to_string(&job).unwrap_or_default();
                        let event = format!("event: job\nid: {last}\ndata: {data}\n\n");
                        if tx.send(event.into()).await.is_err() {
                            return;
                        }
                        if job.status.state.is_terminal() {
                            return;
                        }
                    } else {
                        quiet += 1;
                        if quiet.is_multiple_of(30)
                            && tx.send(": keep-alive\n\n".into()).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let msg = serde_json::json!({"message": e.to_string()});
                    let _ = tx
                        .send(format!("event: error\ndata: {msg}\n\n").into())
                        .await;
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            current = jobs.get(&who, &name).await;
        }
    });
    let mut resp = Response::new(axum::body::Body::new(EventBody(rx)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
