//! The console: server-rendered pages under `/console`. Each page authenticates the session
//! cookie and calls `Platform` operations with the caller's identity, so team isolation and
//! roles apply exactly as in the API.

mod chart;
mod cost;
mod datasets;
mod deployments;
mod jobs;
mod lineage;
mod models;
mod render;
mod session;
mod views;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, OriginalUri, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{any, get};
use plinth_core::CoreError;
use plinth_types::Role;
use plinth_types::audit::{AuditFilter, AuditVerification};
use serde::{Deserialize, Serialize};

use self::chart::Chart;
use self::render::{ConsoleError, OrPage, page};
use self::session::{LOGIN_PATH, Session, clear_cookie, see_other, session_token, set_cookie};
use self::views::{AuditRow, Me, PoolRow, QueueRow, TeamRow};
use crate::AppState;

/// Audit events per console page.
const AUDIT_PAGE: i64 = 100;

type PageResult = Result<Response, ConsoleError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { see_other("/console", None) }))
        .route("/console", get(overview))
        .route("/console/", get(|| async { see_other("/console", None) }))
        .route("/console/login", get(login_form).post(login_submit))
        .route(
            "/console/logout",
            get(|| async { see_other("/console", None) }).post(logout),
        )
        .route("/console/pools", get(pools))
        .route("/console/teams", get(teams))
        .route("/console/queues", get(queues))
        .route("/console/jobs", get(jobs::jobs))
        .route("/console/jobs/{name}", get(jobs::job_detail))
        .route("/console/audit", get(audit))
        .route("/console/lineage", get(lineage::lineage))
        .route("/console/cost", get(cost::cost))
        .route("/console/models", get(models::models))
        .route("/console/models/{name}", get(models::model_detail))
        .route("/console/deployments", get(deployments::deployments))
        .route("/console/contracts", get(contracts))
        .route("/console/contracts/{name}", get(datasets::contract_detail))
        .route(
            "/console/audit/verify",
            get(|| async { see_other("/console/audit", None) }).post(verify),
        )
        .route("/console/{*rest}", any(not_found))
        .layer(axum::middleware::map_response(security_headers))
}

/// Pages hold tenant data and a session: never cache them, never frame them, run no scripts.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

/// Unknown console paths: an HTML 404 for a signed-in caller (others go to the sign-in page).
async fn not_found(Session(who): Session, OriginalUri(uri): OriginalUri) -> ConsoleError {
    ConsoleError::not_found(uri.path()).for_user(&who)
}

// ----- sign-in -----

#[derive(Debug, Default, Serialize)]
struct LoginPage {
    error: Option<String>,
}

fn login_page(status: StatusCode, error: Option<String>) -> Response {
    page(status, "login.html", None, "login", &LoginPage { error })
}

async fn login_form(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let Some(token) = session_token(&headers) else {
        return login_page(StatusCode::OK, None);
    };
    match s.platform.authenticate(&token).await {
        Ok(_) => see_other("/console", None),
        Err(_) => {
            let mut resp = login_page(StatusCode::OK, None);
            resp.headers_mut()
                .insert(header::SET_COOKIE, HeaderValue::from_static(clear_cookie()));
            resp
        }
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login_submit(
    State(s): State<AppState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let token = match form {
        Ok(Form(f)) => f.token,
        Err(e) => {
            return login_page(
                StatusCode::BAD_REQUEST,
                Some(format!("The sign-in form was not understood: {e}")),
            );
        }
    };
    let token = token.trim();
    if token.is_empty() {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("Enter an API token to sign in.".into()),
        );
    }
    match s.platform.authenticate(token).await {
        Ok(who) => {
            tracing::info!(actor = %who.actor(), "console sign-in");
            see_other("/console", Some(&set_cookie(token)))
        }
        Err(CoreError::Unauthenticated(reason)) => {
            tracing::info!(%reason, "console sign-in rejected");
            login_page(
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    "Sign-in failed: {reason}. Check the token and try again."
                )),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "console sign-in failed");
            login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The server could not check the token right now; try again shortly.".into()),
            )
        }
    }
}

async fn logout() -> Response {
    see_other(LOGIN_PATH, Some(clear_cookie()))
}

// ----- overview -----

#[derive(Debug, Serialize)]
struct Card {
    id: &'static str,
    label: &'static str,
    value: String,
    href: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct OverviewPage {
    cards: Vec<Card>,
    pools: Vec<PoolRow>,
    chart: Option<Chart>,
    /// False when the caller's role may not read the audit log.
    recent_visible: bool,
    recent: Vec<AuditRow>,
}

async fn overview(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let ov = s.platform.overview(&who).await.or_page(&who)?;
    let pools: Vec<PoolRow> = s
        .platform
        .list(&who, "Pool")
        .await
        .or_page(&who)?
        .iter()
        .map(views::pool_row)
        .collect();
    let card = |id, label, value: String, href| Card {
        id,
        label,
        value,
        href,
    };
    let data = OverviewPage {
        cards: vec![
            card(
                "stat-pools",
                "Pools",
                ov.pools.to_string(),
                Some("/console/pools"),
            ),
            card(
                "stat-nodes",
                "Nodes",
                ov.nodes.to_string(),
                Some("/console/pools"),
            ),
            card(
                "stat-gpus",
                "Accelerators",
                ov.gpus.to_string(),
                Some("/console/pools"),
            ),
            card(
                "stat-cpus",
                "CPU cores",
                ov.cpus.to_string(),
                Some("/console/pools"),
            ),
            card(
                "stat-teams",
                "Teams",
                ov.teams.to_string(),
                Some("/console/teams"),
            ),
            card(
                "stat-queues",
                "Queues",
                ov.queues.to_string(),
                Some("/console/queues"),
            ),
            card(
                "stat-audit",
                "Audit events",
                ov.audit_events.to_string(),
                Some("/console/audit"),
            ),
        ],
        chart: views::capacity_chart(&pools),
        pools,
        recent_visible: who.role >= Role::Maintainer,
        recent: ov.recent.iter().map(views::audit_row).collect(),
    };
    Ok(page(
        StatusCode::OK,
        "overview.html",
        Some(&Me::from(&who)),
        "overview",
        &data,
    ))
}

// ----- pools, teams, queues -----

#[derive(Debug, Serialize)]
struct PoolsPage {
    pools: Vec<PoolRow>,
    chart: Option<Chart>,
    nodes: u64,
    gpus: u64,
    cpus: u64,
}

async fn pools(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let pools: Vec<PoolRow> = s
        .platform
        .list(&who, "Pool")
        .await
        .or_page(&who)?
        .iter()
        .map(views::pool_row)
        .collect();
    let data = PoolsPage {
        chart: views::gpu_chart(&pools),
        nodes: pools.iter().map(|p| p.nodes).sum(),
        gpus: pools.iter().map(|p| p.gpus).sum(),
        cpus: pools.iter().map(|p| p.cpus).sum(),
        pools,
    };
    Ok(page(
        StatusCode::OK,
        "pools.html",
        Some(&Me::from(&who)),
        "pools",
        &data,
    ))
}

#[derive(Debug, Serialize)]
struct TeamsPage {
    teams: Vec<TeamRow>,
}

async fn teams(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let teams = s
        .platform
        .list(&who, "Team")
        .await
        .or_page(&who)?
        .iter()
        .map(views::team_row)
        .collect();
    Ok(page(
        StatusCode::OK,
        "teams.html",
        Some(&Me::from(&who)),
        "teams",
        &TeamsPage { teams },
    ))
}

#[derive(Debug, Serialize)]
struct ContractRow {
    name: String,
    id: String,
    version: String,
    status: String,
    objects: usize,
    versions: usize,
    latest: Option<String>,
    latest_status: Option<String>,
}

#[derive(Debug, Serialize)]
struct VersionRow {
    contract: String,
    name: String,
    status: String,
    rows: u64,
    failed: u64,
    freshness: Option<String>,
    registered_at: String,
    registered_by: String,
    digest: Option<String>,
}

#[derive(Debug, Serialize)]
struct ContractsPage {
    contracts: Vec<ContractRow>,
    versions: Vec<VersionRow>,
}

async fn contracts(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let list = s.platform.list(&who, "DataContract").await.or_page(&who)?;
    let mut contracts = Vec::new();
    let mut versions = Vec::new();
    for c in &list {
        let name = c.metadata.name.clone();
        let vs = s
            .platform
            .list_dataset_versions(&who, &name)
            .await
            .or_page(&who)?;
        let text = |k: &str| {
            c.spec
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        contracts.push(ContractRow {
            id: text("id"),
            version: text("version"),
            status: text("status"),
            objects: c
                .spec
                .get("schema")
                .and_then(|v| v.as_array())
                .map_or(0, Vec::len),
            versions: vs.len(),
            latest: vs.first().map(|v| v.name.clone()),
            latest_status: vs.first().map(|v| v.spec.status.clone()),
            name: name.clone(),
        });
        versions.extend(vs.into_iter().map(|v| VersionRow {
            contract: name.clone(),
            status: v.spec.status,
            rows: v.spec.rows,
            failed: v.spec.counts.get("failed").copied().unwrap_or(0),
            freshness: v.spec.freshness,
            registered_at: v.registered_at,
            registered_by: v.registered_by,
            digest: v.spec.digest.map(|d| d.chars().take(19).collect()),
            name: v.name,
        }));
    }
    Ok(page(
        StatusCode::OK,
        "contracts.html",
        Some(&Me::from(&who)),
        "contracts",
        &ContractsPage {
            contracts,
            versions,
        },
    ))
}

#[derive(Debug, Serialize)]
struct QueuesPage {
    queues: Vec<QueueRow>,
    chart: Option<Chart>,
    /// Per queue: what its admitted jobs use on each pool, against its quota.
    usage: std::collections::BTreeMap<String, Vec<String>>,
}

async fn queues(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let queues: Vec<QueueRow> = s
        .platform
        .list(&who, "Queue")
        .await
        .or_page(&who)?
        .iter()
        .map(views::queue_row)
        .collect();
    let mut usage: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let raw = match &s.jobs {
        Some(c) => c.queue_usage().await,
        None => Vec::new(),
    };
    {
        for u in raw.iter().cloned() {
            let mut text = format!("{}: {} GPUs, {} CPUs in use", u.pool, u.gpus, u.cpus);
            if u.borrowed > 0.0 {
                text.push_str(&format!(" ({} GPUs borrowed)", u.borrowed));
            }
            usage.entry(u.queue).or_default().push(text);
        }
    }
    let data = QueuesPage {
        chart: jobs::usage_chart(&jobs::queue_bars(&queues, &raw))
            .or_else(|| views::quota_chart(&queues)),
        queues,
        usage,
    };
    Ok(page(
        StatusCode::OK,
        "queues.html",
        Some(&Me::from(&who)),
        "queues",
        &data,
    ))
}

// ----- audit -----

/// The audit page's query string. Every field is text so a bad value shows a message on the
/// page instead of a framework rejection.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
struct AuditQuery {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    after_seq: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl AuditQuery {
    /// The filter values as typed, trimmed, empty ones dropped.
    fn normalized(&self) -> AuditQuery {
        AuditQuery {
            actor: non_empty(&self.actor),
            action: non_empty(&self.action),
            kind: non_empty(&self.kind),
            team: non_empty(&self.team),
            after_seq: non_empty(&self.after_seq),
        }
    }
}

#[derive(Debug, Serialize)]
struct AuditPage {
    filters: AuditQuery,
    /// The permission message for roles that may not read the log; then no table.
    denied: Option<String>,
    /// A problem with the filters; then no table.
    invalid: Option<String>,
    events: Vec<AuditRow>,
    /// Query of the next page, when this one is full.
    next: Option<AuditQuery>,
    filtered: bool,
    can_verify: bool,
}

async fn audit(
    State(s): State<AppState>,
    Session(who): Session,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let me = Me::from(&who);
    let filters = query.map(|Query(q)| q.normalized()).unwrap_or_default();
    let mut data = AuditPage {
        filtered: filters.actor.is_some()
            || filters.action.is_some()
            || filters.kind.is_some()
            || filters.team.is_some(),
        filters: filters.clone(),
        denied: None,
        invalid: None,
        events: Vec::new(),
        next: None,
        can_verify: who.is_admin(),
    };
    let after_seq = match filters.after_seq.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            data.invalid = Some("after_seq: must be a whole number".into());
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "audit.html",
                Some(&me),
                "audit",
                &data,
            ));
        }
    };
    let filter = AuditFilter {
        actor: filters.actor.clone(),
        action: filters.action.clone(),
        kind: filters.kind.clone(),
        team: filters.team.clone(),
        after_seq,
        limit: Some(AUDIT_PAGE),
        ..Default::default()
    };
    match s.platform.audit_log(&who, filter).await {
        Ok(events) => {
            if events.len() as i64 == AUDIT_PAGE
                && let Some(last) = events.last()
            {
                data.next = Some(AuditQuery {
                    after_seq: Some(last.seq.to_string()),
                    ..filters
                });
            }
            data.events = events.iter().map(views::audit_row).collect();
            Ok(page(
                StatusCode::OK,
                "audit.html",
                Some(&me),
                "audit",
                &data,
            ))
        }
        Err(CoreError::PermissionDenied(m)) => {
            data.denied = Some(m);
            Ok(page(
                StatusCode::FORBIDDEN,
                "audit.html",
                Some(&me),
                "audit",
                &data,
            ))
        }
        Err(CoreError::Invalid { message, .. }) => {
            data.invalid = Some(message);
            Ok(page(
                StatusCode::BAD_REQUEST,
                "audit.html",
                Some(&me),
                "audit",
                &data,
            ))
        }
        Err(e) => Err(ConsoleError::core(e, &who)),
    }
}

#[derive(Debug, Serialize)]
struct VerifyPage {
    result: AuditVerification,
}

async fn verify(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let result = s.platform.audit_verify(&who).await.or_page(&who)?;
    if !result.ok {
        tracing::warn!(checked = result.checked, first_bad = ?result.first_bad, "audit chain broken");
    }
    Ok(page(
        StatusCode::OK,
        "verify.html",
        Some(&Me::from(&who)),
        "audit",
        &VerifyPage { result },
    ))
}

#[cfg(test)]
mod tests;
