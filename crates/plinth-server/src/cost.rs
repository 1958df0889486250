//! The cost engine in the platform: usage records persisted from job attempts (and, through
//! `POST /api/v1/cost/usage`, from the gateway or any other meter), priced with the `Pool`
//! resources and turned into reports, unit costs, FOCUS exports, budget status, metrics and the
//! admission guards (approvals over an estimate, GPU-hour quotas). The arithmetic is the
//! `plinth-cost` library's; this module loads, converts and serves.
//!
//! Routes: `GET /api/v1/cost/report`, `GET /api/v1/cost/units`, `GET /api/v1/cost/export`,
//! `POST /api/v1/cost/usage`, `GET /api/v1/cost/budgets`, `POST /api/v1/jobs/{name}/approve`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use plinth_config::kinds::{BUDGET_KIND, GPU_QUOTA_KIND};
use plinth_cost::{
    Allocation, BudgetSpec, BudgetStatus, CostError, Dimension, DirectCost, FocusCsvWriter,
    FocusOptions, FocusParquetWriter, FocusVersion, GpuQuotaSpec, JobEstimate, Ledger, Period,
    PoolPrice, PriceBook, Procurement, Report, Resources, Tags, UnitCosts, UnitMetric, UsageRecord,
    Window, Workload, allocate, approval_decision, check_quota, for_each_focus_row, gpu_hours_used,
    procurement_name, unit_costs_where,
};
use plinth_store::Store;
use plinth_store::usage::{SOURCE_GATEWAY, SOURCE_JOB, UsageOutcome, UsageRow};
use plinth_types::job::{JobSpec, parse_duration};
use plinth_types::spec::PoolSpec;
use plinth_types::{ErrorCode, Identity, Role};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

/// The most usage rows one `POST /api/v1/cost/usage` may carry.
pub const MAX_INGEST: usize = 10_000;

/// Rows the usage writer stores per transaction.
const WRITE_BATCH: usize = 1_000;
/// How long the usage writer waits after a row for more before it stores them.
const WRITE_GATHER: Duration = Duration::from_millis(20);

/// How long the admission guard's figures (budgets, GPU-hours used) are reused.
const GUARD_TTL: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/cost/report", get(report))
        .route("/api/v1/cost/units", get(units))
        .route("/api/v1/cost/export", get(export))
        .route("/api/v1/cost/usage", post(ingest_usage))
        .route("/api/v1/cost/budgets", get(budgets))
        .route("/api/v1/jobs/{name}/approve", post(approve_job))
}

// ---------------------------------------------------------------------------------------------
// Errors and small helpers

fn cost_err(e: CostError) -> ApiErrorResponse {
    ApiErrorResponse::new(e.code(), e.to_string())
}

fn store_err(e: plinth_store::StoreError) -> ApiErrorResponse {
    ApiErrorResponse::from(plinth_core::CoreError::from(e))
}

fn invalid(msg: impl Into<String>) -> ApiErrorResponse {
    ApiErrorResponse::new(ErrorCode::InvalidArgument, msg)
}

/// RFC 3339 UTC with microseconds: how the usage table keeps times (they sort as text).
pub fn micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(what: &str, s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{what}: {s:?} is not an RFC 3339 time ({e})"))
}

fn parse_procurement(s: &str) -> Result<Procurement, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("procurement: {s:?} is not one of on_demand, reserved, spot"))
}

// ---------------------------------------------------------------------------------------------
// Usage records: from the executor, to and from the store

/// The usage row of a job attempt as the executor metered it: the GPUs held (GPU-seconds /
/// wall seconds), the CPU cores used on average (CPU-seconds / wall seconds), the CPU cores and
/// memory the job requested (per pod × its pods, for a gang job whose outcome adds up its pods'
/// usage), and the attempt's tags (the team included).
pub fn attempt_row(u: &plinth_exec::UsageRecord, spec: &JobSpec) -> UsageRow {
    let per_second = |x: f64| {
        if u.wall_seconds > 0.0 && x.is_finite() {
            (x / u.wall_seconds).max(0.0)
        } else {
            0.0
        }
    };
    let pods = f64::from(spec.nodes.max(1));
    let per_job = |x: f64| {
        if x.is_finite() {
            x.max(0.0) * pods
        } else {
            0.0
        }
    };
    let mut tags = u.tags.clone();
    tags.entry("team".into())
        .or_insert_with(|| spec.team.clone());
    let model_version = tags.get("model_version").cloned();
    UsageRow {
        source: SOURCE_JOB.into(),
        id: format!("job/{}/attempt/{}", u.job_id, u.attempt),
        workload: "job".into(),
        workload_name: u.job_id.clone(),
        attempt: i64::from(u.attempt),
        pool: u.pool.clone(),
        procurement: procurement_name(u.procurement).into(),
        start: micros(u.started_at),
        end: micros(u.ended_at.max(u.started_at)),
        request_gpus: per_second(u.gpu_seconds),
        request_cpus: per_job(spec.cpus),
        request_memory_gib: per_job(spec.memory_gib),
        usage_gpus: 0.0,
        usage_cpus: per_second(u.cpu_seconds),
        usage_memory_gib: 0.0,
        tags,
        model_version,
        inferences: 0,
        end_reason: Some(u.end_reason.as_str().into()),
    }
}

/// A stored row as the cost engine's record; its id is `<source>/<id>`, unique across
/// sources.
pub fn to_record(row: &UsageRow) -> Result<UsageRecord, String> {
    let name = format!("usage record {}/{}", row.source, row.id);
    let workload = match row.workload.as_str() {
        "job" => Workload::Job {
            job: row.workload_name.clone(),
            attempt: u32::try_from(row.attempt)
                .map_err(|_| format!("{name}: attempt {} is out of range", row.attempt))?,
        },
        "serving" => Workload::Serving {
            deployment: row.workload_name.clone(),
        },
        other => {
            return Err(format!("{name}: workload {other:?} is not job or serving"));
        }
    };
    let procurement = parse_procurement(&row.procurement).map_err(|e| format!("{name}: {e}"))?;
    let direct_cost = direct_cost(row).map_err(|e| format!("{name}: {e}"))?;
    let start = parse_time("start", &row.start).map_err(|e| format!("{name}: {e}"))?;
    let end = parse_time("end", &row.end).map_err(|e| format!("{name}: {e}"))?;
    Ok(UsageRecord {
        id: format!("{}/{}", row.source, row.id),
        workload,
        pool: row.pool.clone(),
        procurement,
        start,
        end,
        request: plinth_cost::Resources::new(
            row.request_gpus,
            row.request_cpus,
            row.request_memory_gib,
        ),
        usage: plinth_cost::Resources::new(row.usage_gpus, row.usage_cpus, row.usage_memory_gib),
        tags: Tags::from_map(&row.tags),
        model_version: row.model_version.clone(),
        inferences: u64::try_from(row.inferences).unwrap_or(0),
        direct_cost,
    })
}

/// The tag of a usage row (from a meter other than the job controller) that carries a cost
/// charged as is: the gateway writes what a request's tokens cost at its deployment's prices.
pub const COST_TAG: &str = "cost";
/// The tag with the ISO 4217 code of [`COST_TAG`].
pub const CURRENCY_TAG: &str = "currency";

/// A row's direct cost: tags `cost` and `currency` on a row of another source than `job` (job
/// tags are the submitter's and are not read as money). A zero cost without a currency (a
/// request to a deployment without pricing) is no cost; a cost above 0 without a currency is
/// an error, never summed as if it were in the report's currency.
fn direct_cost(row: &UsageRow) -> Result<Option<DirectCost>, String> {
    if row.source == SOURCE_JOB {
        return Ok(None);
    }
    let Some(text) = row.tags.get(COST_TAG) else {
        return Ok(None);
    };
    let amount: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| format!("tag {COST_TAG}: {text:?} is not an amount >= 0"))?;
    match row.tags.get(CURRENCY_TAG).map(|c| c.trim()) {
        Some(c) if !c.is_empty() => Ok(Some(DirectCost {
            amount,
            currency: c.to_string(),
        })),
        _ if amount == 0.0 => Ok(None),
        _ => Err(format!(
            "tag {COST_TAG} is {text} but tag {CURRENCY_TAG} (an ISO 4217 code such as USD) is missing"
        )),
    }
}

/// Hands usage rows to a background writer that stores them in batches, so the job controller
/// never waits for the usage table. A row the database refuses for a while is logged; the
/// executor's own usage file still holds it and [`backfill`] stores it at the next start.
pub struct UsageSink {
    tx: Option<mpsc::UnboundedSender<UsageRow>>,
}

impl UsageSink {
    /// Starts the writer on the current Tokio runtime (none outside one: rows are dropped).
    pub fn new(store: Store) -> UsageSink {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return UsageSink { tx: None };
        };
        let (tx, rx) = mpsc::unbounded_channel();
        handle.spawn(write_loop(store, rx));
        UsageSink { tx: Some(tx) }
    }

    pub fn send(&self, row: UsageRow) {
        match &self.tx {
            Some(tx) => {
                if tx.send(row).is_err() {
                    tracing::warn!("usage writer stopped; usage record not stored");
                }
            }
            None => tracing::warn!(id = %row.id, "no usage writer; usage record not stored"),
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::UnboundedReceiver<UsageRow>) {
    while let Some(first) = rx.recv().await {
        // Rows come one per ended attempt, often many at once: gathering them for a moment
        // makes one transaction of what would be dozens.
        tokio::time::sleep(WRITE_GATHER).await;
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        store_rows(&store, &batch).await;
    }
}

/// Stores rows, retrying while the database is unavailable; a conflicting row is logged and
/// the others stored.
async fn store_rows(store: &Store, rows: &[UsageRow]) {
    let mut delay = Duration::from_millis(200);
    for _ in 0..6 {
        match store.record_usage(rows).await {
            Ok(_) => return,
            Err(plinth_store::StoreError::Conflict(_)) => {
                for r in rows {
                    if let Err(e) = store.record_usage(std::slice::from_ref(r)).await {
                        tracing::warn!(id = %r.id, error = %e, "usage record not stored");
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(rows = rows.len(), error = %e, "cannot store usage records; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::error!(
        rows = rows.len(),
        "usage records not stored; they are read again from the executor at the next start"
    );
}

/// Stores the usage of every attempt the executor has recorded (its usage file survives a
/// crash), idempotently: rows already stored are counted once.
pub async fn backfill(store: &Store, records: Vec<plinth_exec::UsageRecord>) {
    let mut specs: BTreeMap<String, Option<JobSpec>> = BTreeMap::new();
    let mut rows = Vec::with_capacity(records.len());
    for u in records {
        if !specs.contains_key(&u.job_id) {
            let spec = match store
                .get_object(plinth_config::kinds::JOB_KIND, &u.job_id)
                .await
            {
                Ok(Some(o)) => o
                    .document
                    .spec
                    .get("spec")
                    .cloned()
                    .and_then(|v| serde_json::from_value::<JobSpec>(v).ok()),
                _ => None,
            };
            specs.insert(u.job_id.clone(), spec);
        }
        if let Some(Some(spec)) = specs.get(&u.job_id) {
            rows.push(attempt_row(&u, spec));
        }
    }
    for chunk in rows.chunks(WRITE_BATCH) {
        store_rows(store, chunk).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Loading prices and usage

/// The price book of the priced pools, and the pools without a price.
pub struct Prices {
    pub book: PriceBook,
    pub unpriced: BTreeSet<String>,
}

/// The prices of the stored Pools. A pool's capacity is paid for (and idle) from its
/// `pricedSince`, else from when the Pool object was created: a pool applied a minute ago has
/// no idle cost for the month before. Without a priced pool the book is in `fallback_currency`
/// (USD when none).
pub async fn prices(
    store: &Store,
    fallback_currency: Option<&str>,
) -> Result<Prices, ApiErrorResponse> {
    let pools = store.list_objects("Pool").await.map_err(store_err)?;
    let mut book: Option<PriceBook> = None;
    let mut unpriced = BTreeSet::new();
    for o in pools {
        let spec: PoolSpec = match serde_json::from_value(o.document.spec.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pool = %o.name, error = %e, "stored pool does not parse; not priced");
                unpriced.insert(o.name);
                continue;
            }
        };
        match PoolPrice::from_pool_spec(&o.name, &spec) {
            Ok(mut p) => {
                if p.since.is_none() {
                    p.since = DateTime::parse_from_rfc3339(&o.created_at)
                        .ok()
                        .map(|t| t.with_timezone(&Utc));
                }
                let b = match book.as_mut() {
                    Some(b) => b,
                    None => book.insert(PriceBook::new(&p.currency).map_err(cost_err)?),
                };
                b.add(p).map_err(cost_err)?;
            }
            Err(CostError::MissingPrice { .. }) => {
                unpriced.insert(o.name);
            }
            Err(e) => return Err(cost_err(e)),
        }
    }
    let book = match book {
        Some(b) => b,
        None => match fallback_currency.and_then(|c| PriceBook::new(c).ok()) {
            Some(b) => b,
            None => PriceBook::new("USD").map_err(cost_err)?,
        },
    };
    Ok(Prices { book, unpriced })
}

/// Prices and the usage records overlapping `[start, end)`, each once; records that cannot be
/// priced are left out with a warning.
pub struct Loaded {
    pub book: PriceBook,
    pub records: Vec<UsageRecord>,
    pub warnings: Vec<String>,
}

/// The gateway's per-request rows of one deployment, version, tag set and currency in one UTC
/// hour, summed into one record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RequestKey {
    hour: DateTime<Utc>,
    deployment: String,
    version: Option<String>,
    tags: [Option<String>; 5],
    currency: String,
}

#[derive(Debug, Clone)]
struct RequestSum {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    amount: f64,
    inferences: u64,
}

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

impl RequestKey {
    fn of(rec: &UsageRecord, currency: &str) -> RequestKey {
        let deployment = match &rec.workload {
            Workload::Serving { deployment } => deployment.clone(),
            Workload::Job { job, .. } => job.clone(),
        };
        let t = &rec.tags;
        RequestKey {
            hour: hour_of(rec.start),
            deployment,
            version: rec.model_version.clone(),
            tags: [
                t.team.clone(),
                t.project.clone(),
                t.env.clone(),
                t.model.clone(),
                t.owner.clone(),
            ],
            currency: currency.to_string(),
        }
    }

    fn record(self, sum: RequestSum) -> UsageRecord {
        let [team, project, env, model, owner] = self.tags;
        let id = format!(
            "gateway/requests/{}/{}/{}/{}",
            self.deployment,
            self.version.as_deref().unwrap_or("-"),
            self.hour.format("%Y-%m-%dT%H"),
            [&team, &project, &env, &model, &owner]
                .iter()
                .map(|v| v.as_deref().unwrap_or("-"))
                .collect::<Vec<_>>()
                .join("/")
        );
        UsageRecord {
            id,
            workload: Workload::Serving {
                deployment: self.deployment,
            },
            pool: crate::gateway::USAGE_POOL.to_string(),
            procurement: Procurement::OnDemand,
            start: sum.start,
            end: sum.end,
            request: Resources::ZERO,
            usage: Resources::ZERO,
            tags: Tags {
                team,
                project,
                env,
                model,
                owner,
            },
            model_version: self.version,
            inferences: sum.inferences,
            direct_cost: Some(DirectCost {
                amount: sum.amount,
                currency: self.currency,
            }),
        }
    }
}

/// Loads prices and the usage overlapping `[start, end)`.
///
/// The gateway's per-request rows (source `gateway`, each carrying what its tokens cost at the
/// deployment's `pricing`) are summed per deployment, version, tags and UTC hour into serving
/// records with a direct cost and their request count as inferences; a request made with a
/// token of no team is charged to the team owning the deployment. A direct cost in another
/// currency than the pools' is left out with a warning, never added up.
pub async fn load(
    store: &Store,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Loaded, ApiErrorResponse> {
    let rows = store
        .list_usage(&micros(start), &micros(end))
        .await
        .map_err(store_err)?;
    let first_currency = rows
        .iter()
        .find_map(|r| direct_cost(r).ok().flatten().map(|d| d.currency));
    let Prices { book, unpriced } = prices(store, first_currency.as_deref()).await?;
    let owners: BTreeMap<String, String> = if rows.iter().any(|r| r.source == SOURCE_GATEWAY) {
        store
            .list_objects(plinth_config::kinds::DEPLOYMENT_KIND)
            .await
            .map_err(store_err)?
            .into_iter()
            .filter_map(|o| Some((o.name, o.team?)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut ledger = Ledger::new();
    let mut warnings = Vec::new();
    let mut skipped: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    let mut requests: BTreeMap<RequestKey, RequestSum> = BTreeMap::new();
    // currency → (rows, amount) of direct costs not in the book's currency
    let mut foreign: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    // the first reason and the count of gateway rows that cannot be read
    let mut bad_requests: Option<(String, usize)> = None;
    for row in &rows {
        let mut rec = match to_record(row) {
            Ok(r) => r,
            Err(e) if row.source == SOURCE_GATEWAY => {
                bad_requests.get_or_insert((e, 0)).1 += 1;
                continue;
            }
            Err(e) => {
                warnings.push(e);
                continue;
            }
        };
        if let Some(d) = &rec.direct_cost {
            if d.currency != book.currency() {
                let f = foreign.entry(d.currency.clone()).or_default();
                f.0 += 1;
                f.1 += d.amount;
                continue;
            }
            if row.source == SOURCE_GATEWAY {
                if rec.tags.team.is_none()
                    && let Some(team) = owners
                        .get(&row.workload_name)
                        .or_else(|| row.tags.get("deployment").and_then(|d| owners.get(d)))
                {
                    rec.tags.team = Some(team.clone());
                }
                let amount = d.amount;
                let sum = requests
                    .entry(RequestKey::of(&rec, book.currency()))
                    .or_insert(RequestSum {
                        start: rec.start,
                        end: rec.end,
                        amount: 0.0,
                        inferences: 0,
                    });
                sum.start = sum.start.min(rec.start);
                sum.end = sum.end.max(rec.end);
                sum.amount += amount;
                sum.inferences += rec.inferences;
                continue;
            }
        } else if book.get(&rec.pool, rec.procurement).is_err() {
            // A row that holds nothing (a request to a deployment without pricing) costs
            // nothing anyway.
            if rec.request == Resources::ZERO && rec.usage == Resources::ZERO {
                continue;
            }
            *skipped
                .entry((rec.pool.clone(), procurement_name(rec.procurement)))
                .or_default() += 1;
            continue;
        }
        if let Err(e) = ledger.ingest(rec) {
            warnings.push(e.to_string());
        }
    }
    for (key, sum) in requests {
        if let Err(e) = ledger.ingest(key.record(sum)) {
            warnings.push(e.to_string());
        }
    }
    for ((pool, procurement), n) in skipped {
        let why = if unpriced.contains(&pool) {
            "the pool has no price (set pricePerGpuHour or pricePerNodeHour)".to_string()
        } else {
            format!("no pool {pool:?} with {procurement} procurement has a price")
        };
        warnings.push(format!(
            "{n} usage record(s) on pool {pool:?} ({procurement}) are not priced: {why}"
        ));
    }
    for (currency, (n, amount)) in foreign {
        warnings.push(format!(
            "{n} usage record(s) with a direct cost of {} {currency} are left out: costs are reported in {} (the pools' currency) and {currency} is not converted",
            plinth_cost::format_amount(amount),
            book.currency()
        ));
    }
    if let Some((first, n)) = bad_requests {
        warnings.push(format!(
            "{n} gateway request record(s) are left out, the first because: {first}"
        ));
    }
    Ok(Loaded {
        book,
        records: ledger.records().cloned().collect(),
        warnings,
    })
}

// ---------------------------------------------------------------------------------------------
// Query parameters

/// The current UTC month up to `now` (idle capacity of hours still to come is not counted).
pub fn month_to_date(now: DateTime<Utc>) -> Window {
    let month = Period::Month.containing(now);
    Window {
        start: month.start,
        end: now.max(month.start + chrono::Duration::seconds(1)),
    }
}

/// Which time a cost query covers: a month (`period=2026-11`), a day (`period=2026-11-05`),
/// a range of days (`from=2026-11-01&to=2026-11-07`, both included), or by default the
/// current month up to now (UTC).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct PeriodQuery {
    /// `YYYY-MM` (a month) or `YYYY-MM-DD` (a day), UTC.
    pub period: Option<String>,
    /// First day `YYYY-MM-DD` (with `to`).
    pub from: Option<String>,
    /// Last day `YYYY-MM-DD`, included (with `from`).
    pub to: Option<String>,
}

fn day(what: &str, s: &str) -> Result<NaiveDate, ApiErrorResponse> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| invalid(format!("{what}: {s:?} is not a day like 2026-11-05")))
}

impl PeriodQuery {
    pub fn window(&self, now: DateTime<Utc>) -> Result<Window, ApiErrorResponse> {
        match (&self.period, &self.from, &self.to) {
            (Some(p), None, None) if p.len() == 7 => Window::month(p).map_err(cost_err),
            (Some(p), None, None) => {
                let d = day("period", p).map_err(|_| {
                    invalid(format!(
                        "period: {p:?} is neither a month like 2026-11 nor a day like 2026-11-05"
                    ))
                })?;
                Window::days(d, d).map_err(cost_err)
            }
            (None, Some(f), Some(t)) => {
                let (f, t) = (day("from", f)?, day("to", t)?);
                if t < f {
                    return Err(invalid(format!("to: {t} is before from ({f})")));
                }
                Window::days(f, t).map_err(cost_err)
            }
            (None, None, None) => Ok(month_to_date(now)),
            _ => Err(invalid(
                "give either period (2026-11 or 2026-11-05) or both from and to (days), not both",
            )),
        }
    }
}

fn period_of(period: &Option<String>, from: &Option<String>, to: &Option<String>) -> PeriodQuery {
    PeriodQuery {
        period: period.clone(),
        from: from.clone(),
        to: to.clone(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Comma-separated dimensions: team, project, env, model, owner, pool, day (default team).
    pub by: Option<String>,
    /// `YYYY-MM` (a month) or `YYYY-MM-DD` (a day), UTC; default the current month.
    pub period: Option<String>,
    /// First day `YYYY-MM-DD` (with `to`).
    pub from: Option<String>,
    /// Last day `YYYY-MM-DD`, included (with `from`).
    pub to: Option<String>,
    /// Share each pool-day's idle cost among its users in proportion to their cost (default:
    /// idle shown apart in `(idle)` rows).
    pub share_idle: Option<bool>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    pub format: Option<String>,
}

fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiErrorResponse> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(invalid(format!("format: {other:?} is not json or csv"))),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv"))),
    }
}

/// Runs CPU-heavy cost arithmetic off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiErrorResponse> + Send + 'static,
) -> Result<T, ApiErrorResponse> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiErrorResponse::new(ErrorCode::Internal, format!("cost task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// Reports

/// A cost report over a window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    /// The window, `[start, end)`, RFC 3339 UTC.
    pub start: String,
    pub end: String,
    /// Rows grouped by the requested dimensions, with totals (`allocated_total`,
    /// `idle_total`, `untagged_total`, `total`).
    #[schema(value_type = Object)]
    pub report: Report,
    /// Ids of the usage records whose spend has no team tag.
    pub untagged_records: Vec<String>,
    /// Usage that could not be priced or read, each with its reason.
    pub warnings: Vec<String>,
}

/// Whose spend a caller may see: admins all of it; anyone else only the charges tagged with
/// their own team (not untagged spend, not idle capacity shown apart, and only the budgets
/// scoped to their team).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    Teams(BTreeSet<String>),
}

impl Visibility {
    pub fn of(who: &Identity) -> Visibility {
        if who.is_admin() {
            Visibility::All
        } else {
            Visibility::Teams(who.team.iter().cloned().collect())
        }
    }

    /// Whether a charge with these tags is visible.
    pub fn sees(&self, tags: &Tags) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Teams(teams) => tags.team.as_ref().is_some_and(|t| teams.contains(t)),
        }
    }

    /// Whether a budget is visible: one scoped to one of the caller's teams.
    pub fn sees_budget(&self, spec: &BudgetSpec) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Teams(teams) => spec.scope.get("team").is_some_and(|t| teams.contains(t)),
        }
    }
}

/// Allocates `loaded` over `window`.
fn allocation(loaded: &Loaded, window: Window) -> Result<Allocation, ApiErrorResponse> {
    allocate(&loaded.book, window, loaded.records.iter()).map_err(cost_err)
}

/// The report of a window: allocation (max(request, usage) × price), idle per pool-day,
/// grouping; shared by the API and the console.
pub async fn build_report(
    store: &Store,
    window: Window,
    dims: Vec<Dimension>,
    share_idle: bool,
    vis: &Visibility,
) -> Result<CostReport, ApiErrorResponse> {
    let loaded = Arc::new(load(store, window.start, window.end).await?);
    report_from(loaded, window, dims, share_idle, vis).await
}

/// [`build_report`] over usage loaded already (for the window), so several reports of one
/// window read the store once.
pub async fn report_from(
    loaded: Arc<Loaded>,
    window: Window,
    dims: Vec<Dimension>,
    share_idle: bool,
    vis: &Visibility,
) -> Result<CostReport, ApiErrorResponse> {
    let vis = vis.clone();
    blocking(move || {
        let alloc = allocation(&loaded, window)?;
        let (report, untagged_records) = match &vis {
            Visibility::All => (
                Report::build(&alloc, &dims, share_idle),
                alloc
                    .untagged_records()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            ),
            // Untagged spend has no team: none of it is a team's to see.
            Visibility::Teams(_) => (
                Report::build_where(&alloc, &dims, share_idle, &|t| vis.sees(t)),
                Vec::new(),
            ),
        };
        Ok(CostReport {
            start: micros(window.start),
            end: micros(window.end),
            untagged_records,
            report,
            warnings: loaded.warnings.clone(),
        })
    })
    .await
}

/// Cost grouped by tags, pool or day over a period: allocated cost is max(request, usage) per
/// resource × the pool's price; idle capacity is shown apart or shared in proportion to cost.
#[utoipa::path(get, path = "/api/v1/cost/report", tag = "cost", security(("bearer" = [])),
    params(ReportQuery),
    responses((status = 200, body = CostReport, description = "the report (text/csv with format=csv)"),
        (status = 400, body = plinth_types::ApiError), (status = 401, body = plinth_types::ApiError)))]
pub async fn report(
    State(s): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiErrorResponse> {
    let dims = Dimension::parse_list(q.by.as_deref().unwrap_or("team")).map_err(cost_err)?;
    let csv = wants_csv(q.format.as_deref(), &headers)?;
    let window = period_of(&q.period, &q.from, &q.to).window(Utc::now())?;
    let share_idle = q.share_idle.unwrap_or(false);
    let r = build_report(
        s.platform.store(),
        window,
        dims,
        share_idle,
        &Visibility::of(&who),
    )
    .await?;
    if csv {
        let mut buf = Vec::new();
        r.report.write_csv(&mut buf).map_err(cost_err)?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], buf).into_response());
    }
    Ok(Json(r).into_response())
}

// ---------------------------------------------------------------------------------------------
// Unit economics

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricParam {
    TrainingRun,
    ModelVersion,
    ThousandInferences,
    TeamDay,
}

impl From<MetricParam> for UnitMetric {
    fn from(m: MetricParam) -> Self {
        match m {
            MetricParam::TrainingRun => UnitMetric::TrainingRun,
            MetricParam::ModelVersion => UnitMetric::ModelVersion,
            MetricParam::ThousandInferences => UnitMetric::ThousandInferences,
            MetricParam::TeamDay => UnitMetric::TeamDay,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitsQuery {
    /// `training_run` (per job, all attempts), `model_version` (training plus serving),
    /// `thousand_inferences` (per deployment and version), `team_day` (per team per day).
    #[param(inline)]
    pub metric: MetricParam,
    /// `YYYY-MM` (a month) or `YYYY-MM-DD` (a day), UTC; default the current month.
    pub period: Option<String>,
    /// First day `YYYY-MM-DD` (with `to`).
    pub from: Option<String>,
    /// Last day `YYYY-MM-DD`, included (with `from`).
    pub to: Option<String>,
    /// Each charge also carries its pool-day's idle cost in proportion to its cost.
    pub share_idle: Option<bool>,
}

/// Unit costs of a window and the previous window of the same length, with the trend.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitReport {
    #[schema(value_type = Object)]
    pub units: UnitCosts,
    pub warnings: Vec<String>,
}

pub async fn build_units(
    store: &Store,
    window: Window,
    metric: UnitMetric,
    share_idle: bool,
    vis: &Visibility,
) -> Result<UnitReport, ApiErrorResponse> {
    let loaded = Arc::new(load(store, window.previous().start, window.end).await?);
    units_from(loaded, window, metric, share_idle, vis).await
}

/// [`build_units`] over usage loaded already (from the previous window's start to the window's
/// end), so several unit costs of one window read the store once.
pub async fn units_from(
    loaded: Arc<Loaded>,
    window: Window,
    metric: UnitMetric,
    share_idle: bool,
    vis: &Visibility,
) -> Result<UnitReport, ApiErrorResponse> {
    let vis = vis.clone();
    blocking(move || {
        let units = unit_costs_where(
            &loaded.book,
            loaded.records.iter(),
            window,
            metric,
            share_idle,
            &|t| vis.sees(t),
        )
        .map_err(cost_err)?;
        Ok(UnitReport {
            units,
            warnings: loaded.warnings.clone(),
        })
    })
    .await
}

/// Unit economics: cost per training run, per model version, per 1,000 inferences, per team
/// per day, each against the previous window of the same length.
#[utoipa::path(get, path = "/api/v1/cost/units", tag = "cost", security(("bearer" = [])),
    params(UnitsQuery),
    responses((status = 200, body = UnitReport), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError)))]
pub async fn units(
    State(s): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<UnitsQuery>,
) -> Result<Json<UnitReport>, ApiErrorResponse> {
    let window = period_of(&q.period, &q.from, &q.to).window(Utc::now())?;
    Ok(Json(
        build_units(
            s.platform.store(),
            window,
            q.metric.into(),
            q.share_idle.unwrap_or(false),
            &Visibility::of(&who),
        )
        .await?,
    ))
}

// ---------------------------------------------------------------------------------------------
// FOCUS export

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// FOCUS version: `1.0` (default) or `1.2` (adds the columns of 1.1 and 1.2).
    pub focus: Option<String>,
    /// `csv` (default) or `parquet`.
    pub format: Option<String>,
    /// `YYYY-MM` (a month) or `YYYY-MM-DD` (a day), UTC; default the current month.
    pub period: Option<String>,
    /// First day `YYYY-MM-DD` (with `to`).
    pub from: Option<String>,
    /// Last day `YYYY-MM-DD`, included (with `from`).
    pub to: Option<String>,
}

/// Bytes of the export a streaming body sends at once.
const EXPORT_CHUNK: usize = 64 * 1024;

/// A response body fed from a blocking task through a small bounded channel, so an export is
/// sent as it is written and never held whole in memory.
struct ChannelBody {
    rx: mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|chunk| chunk.map(http_body::Frame::data)))
    }
}

/// `io::Write` into a [`ChannelBody`]: chunks of [`EXPORT_CHUNK`] bytes, waiting while the
/// client is slower than the writer; fails once the client has gone away.
struct ChunkWriter {
    tx: mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK));
        self.tx
            .blocking_send(Ok(chunk.into()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes the FOCUS rows of `alloc` into `w` as CSV (row by row) or Parquet (a row group at a
/// time).
fn write_focus(
    book: &PriceBook,
    alloc: &Allocation,
    opts: &FocusOptions,
    parquet: bool,
    w: &mut ChunkWriter,
) -> Result<(), CostError> {
    if parquet {
        let mut out = FocusParquetWriter::new(opts, &mut *w)?;
        for_each_focus_row(book, alloc, opts, |row| out.write(row))?;
        out.finish()?;
    } else {
        let mut out = FocusCsvWriter::new(opts, &mut *w)?;
        for_each_focus_row(book, alloc, opts, |row| out.write(&row))?;
        out.finish()?;
    }
    std::io::Write::flush(w).map_err(|e| CostError::Write {
        what: "focus export".into(),
        reason: e.to_string(),
    })
}

/// The period's cost as a FOCUS file: usage rows per resource of each charge, a row per
/// deployment, version and hour of gateway requests priced per token, idle rows per pool-day,
/// purchase rows for reserved capacity. The file is streamed (chunked) as it is written.
/// Callers who may see only their team's spend get their team's rows (no idle or purchase rows).
#[utoipa::path(get, path = "/api/v1/cost/export", tag = "cost", security(("bearer" = [])),
    params(ExportQuery),
    responses((status = 200, description = "the FOCUS file (text/csv or application/vnd.apache.parquet)"),
        (status = 400, body = plinth_types::ApiError), (status = 401, body = plinth_types::ApiError)))]
pub async fn export(
    State(s): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiErrorResponse> {
    let version_text = q.focus.clone().unwrap_or_else(|| "1.0".into());
    let version: FocusVersion = version_text.parse().map_err(cost_err)?;
    let parquet = match q.format.as_deref() {
        None | Some("csv") => false,
        Some("parquet") => true,
        Some(other) => {
            return Err(invalid(format!("format: {other:?} is not csv or parquet")));
        }
    };
    let window = period_of(&q.period, &q.from, &q.to).window(Utc::now())?;
    let loaded = load(s.platform.store(), window.start, window.end).await?;
    let vis = Visibility::of(&who);
    // Allocation errors are answered as errors; once the body starts, a failure cuts it off.
    let (book, alloc) = blocking(move || {
        let mut alloc = allocation(&loaded, window)?;
        if vis != Visibility::All {
            alloc.records.retain(|r| vis.sees(&r.tags));
            alloc.idle.clear();
        }
        Ok((loaded.book, alloc))
    })
    .await?;
    let opts = FocusOptions {
        version,
        ..FocusOptions::default()
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(EXPORT_CHUNK),
        };
        if let Err(e) = write_focus(&book, &alloc, &opts, parquet, &mut w) {
            tracing::warn!(error = %e, "focus export cut off");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let (content_type, ext) = if parquet {
        ("application/vnd.apache.parquet", "parquet")
    } else {
        ("text/csv; charset=utf-8", "csv")
    };
    let file = format!(
        "plinth-focus-{version_text}-{}.{ext}",
        window.start.format("%Y-%m-%d")
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        axum::body::Body::new(ChannelBody { rx }),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Ingesting usage from other meters

/// Usage intervals to store (`source` other than `job`, which the job controller writes).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestUsage {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<UsageRow>,
}

/// What an ingest stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestOutcome {
    /// Rows stored for the first time.
    pub inserted: usize,
    /// Rows already stored with the same content (counted once).
    pub duplicates: usize,
}

/// Checks and normalizes one row sent by a client: times to microseconds UTC, a workload and
/// procurement the engine knows, amounts it can price.
fn normalize(i: usize, mut row: UsageRow) -> Result<UsageRow, ApiErrorResponse> {
    let at = |m: String| invalid(format!("records[{i}]: {m}"));
    if row.source == SOURCE_JOB {
        return Err(at(format!(
            "source {SOURCE_JOB:?} is written by the job controller only; use another source such as \"gateway\""
        )));
    }
    row.start = micros(parse_time("start", &row.start).map_err(at)?);
    row.end = micros(parse_time("end", &row.end).map_err(at)?);
    row.check().map_err(at)?;
    let rec = to_record(&row).map_err(at)?;
    rec.validate().map_err(|e| at(e.to_string()))?;
    Ok(row)
}

/// Stores usage intervals from another meter (the gateway's serving replicas, an importer),
/// idempotently: a row sent again is counted once; the same source and id with other content is
/// a conflict and nothing of the request is stored. Admins only.
#[utoipa::path(post, path = "/api/v1/cost/usage", tag = "cost", security(("bearer" = [])),
    request_body = IngestUsage,
    responses((status = 200, body = IngestOutcome), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 409, body = plinth_types::ApiError)))]
pub async fn ingest_usage(
    State(s): State<AppState>,
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> Result<Json<IngestOutcome>, ApiErrorResponse> {
    if !who.is_admin() {
        return Err(ApiErrorResponse::new(
            ErrorCode::PermissionDenied,
            format!(
                "{} (role {}) may not record usage: requires admin",
                who.actor(),
                who.role
            ),
        ));
    }
    let body: IngestUsage = crate::api::parse_json(&body)?;
    if body.records.len() > MAX_INGEST {
        return Err(invalid(format!(
            "records: {} rows is more than the {MAX_INGEST} one request may carry",
            body.records.len()
        )));
    }
    let rows = body
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| normalize(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let UsageOutcome {
        inserted,
        duplicates,
    } = s
        .platform
        .store()
        .record_usage(&rows)
        .await
        .map_err(store_err)?;
    Ok(Json(IngestOutcome {
        inserted,
        duplicates,
    }))
}

// ---------------------------------------------------------------------------------------------
// Budgets

/// A budget with where it stands now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetView {
    pub name: String,
    #[schema(value_type = Object)]
    pub spec: BudgetSpec,
    /// Spend, run rate, forecast, thresholds crossed or forecast to cross; absent when the
    /// budget cannot be evaluated (see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub status: Option<BudgetStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The stored Budget resources (name, spec); one that does not parse is logged and left out.
async fn budget_specs(store: &Store) -> Result<Vec<(String, BudgetSpec)>, ApiErrorResponse> {
    let objects = store.list_objects(BUDGET_KIND).await.map_err(store_err)?;
    let mut specs = Vec::new();
    for o in objects {
        match serde_json::from_value::<BudgetSpec>(o.document.spec.clone()) {
            Ok(spec) => specs.push((o.name, spec)),
            Err(e) => tracing::warn!(budget = %o.name, error = %e, "stored budget does not parse"),
        }
    }
    Ok(specs)
}

/// Where the usage of every budget's current period starts (the earliest), and `now` made a
/// valid window end.
fn budget_range(
    specs: &[(String, BudgetSpec)],
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = specs
        .iter()
        .map(|(_, s)| s.period.containing(now).start)
        .min()
        .unwrap_or(now)
        .min(Period::Month.containing(now).start);
    (start, now.max(start + chrono::Duration::seconds(1)))
}

/// Evaluates budgets at `now` over loaded usage.
fn evaluate_budgets(
    specs: Vec<(String, BudgetSpec)>,
    loaded: &Loaded,
    now: DateTime<Utc>,
) -> Vec<BudgetView> {
    specs
        .into_iter()
        .map(|(name, spec)| {
            match spec
                .to_budget(&name)
                .evaluate(&loaded.book, loaded.records.iter(), now)
            {
                Ok(st) => BudgetView {
                    name,
                    spec,
                    status: Some(st),
                    error: None,
                },
                Err(e) => BudgetView {
                    name,
                    spec,
                    status: None,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect()
}

/// Every Budget resource, evaluated at `now` over the usage of its period.
pub async fn budget_views(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<BudgetView>, ApiErrorResponse> {
    let specs = budget_specs(store).await?;
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let (start, end) = budget_range(&specs, now);
    let loaded = load(store, start, end).await?;
    Ok(evaluate_budgets(specs, &loaded, now))
}

/// Every budget with its spend so far in the current period, run rate, forecast, and the
/// thresholds crossed (or forecast to be crossed, and when).
#[utoipa::path(get, path = "/api/v1/cost/budgets", tag = "cost", security(("bearer" = [])),
    responses((status = 200, body = Vec<BudgetView>), (status = 401, body = plinth_types::ApiError)))]
pub async fn budgets(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<BudgetView>>, ApiErrorResponse> {
    let mut views = budget_views(s.platform.store(), Utc::now()).await?;
    notify_crossings(&views);
    let vis = Visibility::of(&who);
    views.retain(|v| vis.sees_budget(&v.spec));
    Ok(Json(views))
}

/// Logs each threshold the first time this process sees it crossed in a period and, for a
/// `notify` threshold of a budget with a `webhook`, POSTs the crossing there (the console and
/// `/metrics` show crossings all the time).
fn notify_crossings(views: &[BudgetView]) {
    static SEEN: std::sync::Mutex<BTreeSet<(String, String, u64)>> =
        std::sync::Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    for v in views {
        let Some(st) = &v.status else { continue };
        for t in st.thresholds.iter().filter(|t| t.crossed) {
            let key = (v.name.clone(), micros(st.period.start), t.percent.to_bits());
            if !seen.insert(key) {
                continue;
            }
            tracing::warn!(
                budget = %v.name,
                percent = t.percent,
                spent = st.spent,
                amount = st.amount,
                currency = %st.currency,
                action = ?t.action,
                "budget threshold crossed"
            );
            if let (plinth_cost::Action::Notify, Some(url)) = (t.action, &v.spec.webhook) {
                let body = serde_json::json!({
                    "budget": v.name,
                    "percent": t.percent,
                    "threshold": t.amount,
                    "spent": st.spent,
                    "amount": st.amount,
                    "currency": st.currency,
                    "forecast": st.forecast,
                    "periodStart": micros(st.period.start),
                    "periodEnd": micros(st.period.end),
                    "warnings": st.warnings,
                })
                .to_string();
                let (url, name) = (url.clone(), v.name.clone());
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        if let Err(e) = post_json(&url, &body).await {
                            tracing::warn!(budget = %name, url = %url, error = %e, "budget webhook failed");
                        }
                    });
                }
            }
        }
    }
}

/// The TLS client settings of `https://` webhooks: the system's roots (the files
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` name, else the distribution's bundle) plus the CA file of the
/// server config (`cost.webhook_ca_file`). Set once at start by [`configure_webhooks`].
static WEBHOOK_TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Builds the TLS settings of webhooks from the system roots and `ca_file` (PEM; every
/// certificate in it is trusted). An unreadable or empty CA file is an error naming it.
pub fn webhook_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let what = format!("webhook CA file {}", path.display());
        let pem = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: not PEM certificates ({e})"))?;
        if certs.is_empty() {
            return Err(format!("{what}: holds no PEM certificate"));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{what}: a certificate is not usable as a CA ({e})"))?;
        }
    } else if added == 0 {
        tracing::warn!(
            "no system CA certificates found: https budget webhooks will fail (set cost.webhook_ca_file)"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Sets the TLS trust of `https://` budget webhooks (called once by `serve`; later calls keep
/// the first settings). Fails when the CA file cannot be used.
pub fn configure_webhooks(ca_file: Option<&std::path::Path>) -> Result<(), String> {
    let tls = webhook_tls(ca_file)?;
    let _ = WEBHOOK_TLS.set(Arc::new(tls));
    Ok(())
}

fn webhook_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    if let Some(c) = WEBHOOK_TLS.get() {
        return Ok(Arc::clone(c));
    }
    let c = Arc::new(webhook_tls(None)?);
    Ok(Arc::clone(WEBHOOK_TLS.get_or_init(|| c)))
}

/// POSTs a JSON body to an `http://` or `https://` URL (HTTP/1.1, one request, 5 s limit)
/// and checks for a 2xx answer.
async fn post_json(url: &str, body: &str) -> Result<(), String> {
    let tls = if url.starts_with("https://") {
        Some(webhook_tls_config()?)
    } else {
        None
    };
    post_json_with(url, body, tls).await
}

/// [`post_json`] with the TLS settings of `https://` URLs given.
pub async fn post_json_with(
    url: &str,
    body: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(), String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // host[:port], host an IPv4 address, a name or a bracketed IPv6 address
    let (name, addr) = match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, host.to_string()),
        _ => (host, format!("{host}:{default_port}")),
    };
    let name = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: plinth\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        match tls {
            None => send_and_check(tcp, &addr, &request).await,
            Some(config) => {
                let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| format!("{name:?} is not a host name for TLS: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {addr}: {e}"))?;
                send_and_check(stream, &addr, &request).await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("{addr} did not answer within 5 s"))?
}

async fn send_and_check<S>(mut s: S, addr: &str, request: &str) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let n = s
        .read(&mut head)
        .await
        .map_err(|e| format!("reading the answer of {addr}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]).to_string();
    match line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(format!(
            "{addr} answered {:?}",
            line.lines().next().unwrap_or("")
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TeamLabel {
    pub team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Spend and budget gauges, refreshed by a scrape at most every [`GUARD_TTL`] (a scraper polling
/// faster gets the figures of the last refresh; computing them reads the month's usage).
pub struct CostMetrics {
    refreshed: std::sync::Mutex<Option<Instant>>,
    spend: Family<TeamLabel, FloatGauge>,
    idle: FloatGauge,
    budget_spent: Family<BudgetLabel, FloatGauge>,
    budget_amount: Family<BudgetLabel, FloatGauge>,
    budget_used: Family<BudgetLabel, FloatGauge>,
    budget_forecast: Family<BudgetLabel, FloatGauge>,
    budget_crossed: Family<BudgetLabel, Gauge>,
}

impl CostMetrics {
    pub fn register(registry: &mut Registry) -> CostMetrics {
        let m = CostMetrics {
            refreshed: std::sync::Mutex::new(None),
            spend: Family::default(),
            idle: FloatGauge::default(),
            budget_spent: Family::default(),
            budget_amount: Family::default(),
            budget_used: Family::default(),
            budget_forecast: Family::default(),
            budget_crossed: Family::default(),
        };
        registry.register(
            "cost_month_to_date",
            "Allocated cost of the current UTC month per team ((untagged) for spend without a team), in the pools' currency",
            m.spend.clone(),
        );
        registry.register(
            "cost_idle_month_to_date",
            "Idle cost (capacity paid for and not allocated) of the current UTC month",
            m.idle.clone(),
        );
        registry.register(
            "budget_spent",
            "Spend counted against each budget in its current period",
            m.budget_spent.clone(),
        );
        registry.register(
            "budget_amount",
            "Each budget's amount",
            m.budget_amount.clone(),
        );
        registry.register(
            "budget_used_ratio",
            "Spend / amount of each budget (1 = the whole budget)",
            m.budget_used.clone(),
        );
        registry.register(
            "budget_forecast",
            "Spend each budget is forecast to reach at the end of its period at the current run rate",
            m.budget_forecast.clone(),
        );
        registry.register(
            "budget_thresholds_crossed",
            "Thresholds of each budget crossed in its current period",
            m.budget_crossed.clone(),
        );
        m
    }

    /// Recomputes the gauges from the store unless that was done less than [`GUARD_TTL`] ago;
    /// a failure leaves them as they were.
    pub async fn refresh(&self, store: &Store) {
        {
            let mut last = self.refreshed.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < GUARD_TTL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let now = Utc::now();
        match build_report(
            store,
            month_to_date(now),
            vec![Dimension::Team],
            false,
            &Visibility::All,
        )
        .await
        {
            Ok(r) => {
                self.spend.clear();
                for row in r.report.rows.iter().filter(|r| !r.idle) {
                    let team = row.group.first().cloned().unwrap_or_default();
                    self.spend.get_or_create(&TeamLabel { team }).set(row.cost);
                }
                self.idle.set(r.report.idle_total);
            }
            Err(e) => tracing::warn!(error = %e.0.message, "cannot compute cost metrics"),
        }
        match budget_views(store, now).await {
            Ok(views) => {
                notify_crossings(&views);
                self.budget_spent.clear();
                self.budget_amount.clear();
                self.budget_used.clear();
                self.budget_forecast.clear();
                self.budget_crossed.clear();
                for v in views {
                    let Some(st) = v.status else { continue };
                    let l = BudgetLabel { budget: v.name };
                    self.budget_spent.get_or_create(&l).set(st.spent);
                    self.budget_amount.get_or_create(&l).set(st.amount);
                    self.budget_used
                        .get_or_create(&l)
                        .set(st.percent_used / 100.0);
                    self.budget_forecast.get_or_create(&l).set(st.forecast);
                    let crossed = st.thresholds.iter().filter(|t| t.crossed).count();
                    self.budget_crossed
                        .get_or_create(&l)
                        .set(i64::try_from(crossed).unwrap_or(i64::MAX));
                }
            }
            Err(e) => tracing::warn!(error = %e.0.message, "cannot compute budget metrics"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Admission guards: approvals over an estimate, GPU-hour quotas, blocked non-production work

/// What the guards know: budget statuses with their scopes, quotas and GPU-hours used.
#[derive(Default)]
struct GuardState {
    book: Option<PriceBook>,
    /// Each budget's scope (tag → value) and status.
    budgets: Vec<(BTreeMap<String, String>, BudgetStatus)>,
    /// Team → GPU-hours per month.
    quotas: BTreeMap<String, f64>,
    /// Team → GPU-hours used this month.
    used: BTreeMap<String, f64>,
}

/// The admission guards of the job controller. Cheap to clone.
#[derive(Clone, Default)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

#[derive(Default)]
struct GuardInner {
    state: RwLock<GuardState>,
    /// The usage last loaded (when, from where), reused for a few seconds.
    cache: tokio::sync::Mutex<Option<CachedUsage>>,
    /// A server setting: jobs estimated above this wait for approval (none: only budgets).
    approval_threshold: Option<f64>,
}

/// Usage loaded for the guards: when, from which time, and what.
type CachedUsage = (Instant, DateTime<Utc>, Arc<Loaded>);

/// What the guards decided for a job about to be submitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Queue,
    /// Waits as `pending_approval` with this reason.
    NeedsApproval(String),
}

impl Guard {
    /// Guards with the standing approval threshold of the server config (`cost.approval_threshold`,
    /// `PLINTH_COST_APPROVAL_THRESHOLD` or `--cost-approval-threshold`; none: only budgets ask
    /// for approval), refreshed in the background every few seconds so quota checks see recent
    /// usage.
    pub fn start(store: Store, approval_threshold: Option<f64>) -> Guard {
        let guard = Guard {
            inner: Arc::new(GuardInner {
                approval_threshold,
                ..GuardInner::default()
            }),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let g = guard.clone();
            handle.spawn(async move {
                loop {
                    g.refresh(&store).await;
                    tokio::time::sleep(GUARD_TTL).await;
                }
            });
        }
        guard
    }

    async fn usage(
        &self,
        store: &Store,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Arc<Loaded>, ApiErrorResponse> {
        let mut cache = self.inner.cache.lock().await;
        if let Some((at, from, loaded)) = cache.as_ref()
            && at.elapsed() < GUARD_TTL
            && *from <= start
        {
            return Ok(Arc::clone(loaded));
        }
        let loaded = Arc::new(load(store, start, end).await?);
        *cache = Some((Instant::now(), start, Arc::clone(&loaded)));
        Ok(loaded)
    }

    /// Re-reads budgets and quotas (always: they are few) and evaluates them over the usage
    /// (re-read when older than a few seconds).
    pub async fn refresh(&self, store: &Store) {
        let now = Utc::now();
        let mut state = GuardState::default();
        let specs = match budget_specs(store).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e.0.message, "guard: cannot read budgets");
                return;
            }
        };
        match store.list_objects(GPU_QUOTA_KIND).await {
            Ok(objects) => {
                for o in objects {
                    if let Ok(q) = serde_json::from_value::<GpuQuotaSpec>(o.document.spec.clone()) {
                        *state.quotas.entry(q.team).or_default() += q.gpu_hours_per_month;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "guard: cannot read gpu quotas"),
        }
        if !specs.is_empty() || !state.quotas.is_empty() || self.inner.approval_threshold.is_some()
        {
            let (start, end) = budget_range(&specs, now);
            match self.usage(store, start, end).await {
                Ok(loaded) => {
                    for team in state.quotas.keys() {
                        if let Ok(u) = gpu_hours_used(loaded.records.iter(), team, now) {
                            state.used.insert(team.clone(), u);
                        }
                    }
                    let views = evaluate_budgets(specs, &loaded, now);
                    notify_crossings(&views);
                    state.budgets = views
                        .into_iter()
                        .filter_map(|v| Some((v.spec.scope, v.status?)))
                        .collect();
                    state.book = Some(loaded.book.clone());
                }
                Err(e) => tracing::warn!(error = %e.0.message, "guard: cannot load usage"),
            }
        }
        *self.inner.state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Whether a new job is queued or waits for approval: its estimate (GPUs × max runtime ×
    /// the GPU-hour price of the most expensive priced pool, an upper bound since the scheduler
    /// picks the pool later) against the standing threshold and the budgets whose scope matches
    /// its tags past a `require_approval` threshold. A budget past `block_non_production`
    /// refuses non-production work outright (the error says why).
    pub fn admission(&self, spec: &JobSpec) -> Result<Admission, String> {
        let st = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        let tags = job_tags(spec);
        let applying: Vec<BudgetStatus> = st
            .budgets
            .iter()
            .filter(|(scope, _)| scope.iter().all(|(k, v)| tags.get(k) == Some(v.as_str())))
            .map(|(_, b)| b.clone())
            .collect();
        if let Some(b) = applying.iter().find(|b| b.blocks(tags.env.as_deref())) {
            return Err(format!(
                "budget {:?} is at {:.1}% of {:.2} {} and blocks non-production work (env {}); tag the job env=production or raise the budget",
                b.name,
                b.percent_used,
                b.amount,
                b.currency,
                tags.env.as_deref().unwrap_or("unset")
            ));
        }
        if self.inner.approval_threshold.is_none() && applying.is_empty() {
            return Ok(Admission::Queue);
        }
        let Some(book) = &st.book else {
            return Ok(Admission::Queue);
        };
        let Some(est) = estimate(book, spec) else {
            return Ok(Admission::Queue);
        };
        match approval_decision(book, &est, self.inner.approval_threshold, &applying) {
            Ok(d) if d.needs_approval => Ok(Admission::NeedsApproval(format!(
                "waiting for approval by a maintainer other than the submitter: estimate {:.2} {}: {}",
                d.estimate,
                d.currency,
                d.reasons.join("; ")
            ))),
            Ok(_) => Ok(Admission::Queue),
            Err(e) => {
                tracing::warn!(error = %e, "cannot estimate job; it is queued");
                Ok(Admission::Queue)
            }
        }
    }

    /// The scheduler hook that holds a team's jobs while their GPU-hours would pass its
    /// monthly quota.
    pub fn quota_hook(&self) -> Box<dyn plinth_sched::AdmissionHook> {
        Box::new(QuotaHook {
            guard: self.clone(),
        })
    }
}

/// Tags of a job: its `tags` plus its team.
pub fn job_tags(spec: &JobSpec) -> Tags {
    let mut map = spec.tags.clone();
    map.insert("team".into(), spec.team.clone());
    Tags::from_map(&map)
}

/// A job's estimate on the most expensive priced pool (an upper bound: the scheduler picks
/// the pool later); `None` without GPUs, a max runtime or a priced GPU pool.
fn estimate(book: &PriceBook, spec: &JobSpec) -> Option<JobEstimate> {
    let hours = spec
        .max_runtime
        .as_deref()
        .and_then(|d| parse_duration(d).ok())?
        .as_secs_f64()
        / 3600.0;
    if spec.gpus <= 0.0 {
        return None;
    }
    let price = book
        .prices()
        .iter()
        .filter(|p| p.rates.gpu_hour > 0.0)
        .max_by(|a, b| a.rates.gpu_hour.total_cmp(&b.rates.gpu_hour))?;
    Some(JobEstimate {
        pool: price.pool.clone(),
        procurement: price.procurement,
        gpus: spec.gpus * f64::from(spec.nodes.max(1)),
        max_runtime_hours: hours,
    })
}

struct QuotaHook {
    guard: Guard,
}

impl plinth_sched::AdmissionHook for QuotaHook {
    fn name(&self) -> &str {
        "gpu-quota"
    }

    fn check(&self, r: &plinth_sched::AdmissionRequest<'_>) -> Result<(), String> {
        let st = self
            .guard
            .inner
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let Some(limit) = st.quotas.get(r.team) else {
            return Ok(());
        };
        let gpus = r.spec.gpus_per_pod * f64::from(r.spec.pods);
        if gpus <= 0.0 {
            return Ok(());
        }
        let used = st.used.get(r.team).copied().unwrap_or(0.0);
        let hours = r.spec.expected_runtime_ms.unwrap_or(0) as f64 / 3_600_000.0;
        let quota = plinth_cost::GpuQuota {
            team: r.team.to_string(),
            gpu_hours_per_month: *limit,
        };
        match check_quota(&quota, used, gpus, hours) {
            Ok(d) if d.fits && used < *limit => Ok(()),
            Ok(d) => Err(format!(
                "team {} has used {:.2} of its {:.2} GPU-hours this month; this job asks for {:.2} more (GpuQuota)",
                r.team, d.used, d.limit, d.requested
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether `who` may approve a job of `team` submitted by `submitted_by`: a maintainer of the
/// team or an admin, and not the submitter.
pub fn may_approve(who: &Identity, team: &str, submitted_by: &str) -> Result<(), String> {
    if !(who.is_admin() || (who.role >= Role::Maintainer && who.in_team(team))) {
        return Err(format!(
            "{} (role {}) may not approve jobs of team {team}: requires maintainer of the team or admin",
            who.actor(),
            who.role
        ));
    }
    if who.actor() == submitted_by {
        return Err(format!(
            "{} submitted this job and may not approve it: another maintainer must",
            who.actor()
        ));
    }
    Ok(())
}

/// Approves a job waiting as `pending_approval` (its estimate crossed an approval threshold):
/// maintainers of its team and admins, never its submitter. Audited as `job.approve`; the job
/// then queues with its original submit time.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/approve", tag = "jobs", security(("bearer" = [])),
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = plinth_types::job::Job), (status = 401, body = plinth_types::ApiError),
        (status = 403, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError),
        (status = 409, body = plinth_types::ApiError)))]
pub async fn approve_job(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Json<plinth_types::job::Job>, ApiErrorResponse> {
    let Some(jobs) = s.jobs.as_ref() else {
        return Err(ApiErrorResponse::new(
            ErrorCode::Unavailable,
            "this server runs no job controller",
        ));
    };
    Ok(Json(jobs.approve(&who, &name).await?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A CA and a certificate for 127.0.0.1 signed by it, made with the `openssl` command in a
    /// fresh directory: (dir, ca.pem, leaf.pem, leaf.key).
    pub(crate) fn test_pki() -> (std::path::PathBuf, String, String, String) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("plinth-tls-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |f: &str| dir.join(f).display().to_string();
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("the openssl command (needed to make test certificates)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let (ca_key, ca, key, csr, leaf, ext) = (
            p("ca.key"),
            p("ca.pem"),
            p("leaf.key"),
            p("leaf.csr"),
            p("leaf.pem"),
            p("ext.cnf"),
        );
        let (ca_key_s, ca_s, key_s, csr_s, leaf_s, ext_s) = (
            ca_key.as_str(),
            ca.as_str(),
            key.as_str(),
            csr.as_str(),
            leaf.as_str(),
            ext.as_str(),
        );
        let mut a: Vec<&str> = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            ca_key_s,
            "-out",
            ca_s,
            "-days",
            "2",
            "-subj",
            "/CN=plinth test CA",
        ]);
        run(&a);
        let mut a: Vec<&str> = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", key_s, "-out", csr_s, "-subj", "/CN=127.0.0.1"]);
        run(&a);
        run(&[
            "x509",
            "-req",
            "-in",
            csr_s,
            "-CA",
            ca_s,
            "-CAkey",
            ca_key_s,
            "-CAcreateserial",
            "-out",
            leaf_s,
            "-days",
            "2",
            "-extfile",
            ext_s,
        ]);
        (dir, ca, leaf, key)
    }

    /// A TLS server on 127.0.0.1 answering one request with `status`; returns its port and
    /// the request it received.
    async fn tls_server(
        leaf: &str,
        key: &str,
        status: &'static str,
    ) -> (u16, tokio::task::JoinHandle<String>) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(leaf)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return String::new();
            };
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = tls.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if n == 0 || text.contains("}") {
                    break;
                }
            }
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            tls.write_all(answer.as_bytes()).await.unwrap();
            tls.shutdown().await.ok();
            String::from_utf8_lossy(&got).to_string()
        });
        (port, task)
    }

    #[tokio::test]
    async fn an_https_webhook_is_posted_when_its_ca_is_trusted_and_refused_otherwise() {
        let (dir, ca, leaf, key) = test_pki();
        let trusting = Arc::new(webhook_tls(Some(std::path::Path::new(&ca))).unwrap());
        let (port, got) = tls_server(&leaf, &key, "200 OK").await;
        let url = format!("https://127.0.0.1:{port}/hooks/budget");
        post_json_with(&url, r#"{"budget":"b"}"#, Some(trusting.clone()))
            .await
            .unwrap();
        let request = got.await.unwrap();
        assert!(
            request.starts_with("POST /hooks/budget HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with(r#"{"budget":"b"}"#), "{request}");

        // A non-2xx answer is an error naming the answer.
        let (port, _got) = tls_server(&leaf, &key, "500 Internal Server Error").await;
        let e = post_json_with(&format!("https://127.0.0.1:{port}/"), "{}", Some(trusting))
            .await
            .unwrap_err();
        assert!(e.contains("500 Internal Server Error"), "{e}");

        // Without the CA (system roots only) the certificate is not trusted.
        let system = Arc::new(webhook_tls(None).unwrap());
        let (port, _got) = tls_server(&leaf, &key, "200 OK").await;
        let e = post_json_with(&format!("https://127.0.0.1:{port}/"), "{}", Some(system))
            .await
            .unwrap_err();
        assert!(e.starts_with(&format!("TLS with 127.0.0.1:{port}:")), "{e}");

        // A CA file that is not PEM is an error naming the file.
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = webhook_tls(Some(&bad)).unwrap_err();
        assert!(
            e.starts_with(&format!("webhook CA file {}", bad.display()))
                && e.contains("no PEM certificate"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    fn row(source: &str, tags: &[(&str, &str)]) -> UsageRow {
        UsageRow {
            source: source.into(),
            id: "request/1".into(),
            workload: "serving".into(),
            workload_name: "chat".into(),
            attempt: 0,
            pool: "gateway".into(),
            procurement: "on_demand".into(),
            start: "2026-11-02T10:00:00.000000Z".into(),
            end: "2026-11-02T10:00:00.250000Z".into(),
            request_gpus: 0.0,
            request_cpus: 0.0,
            request_memory_gib: 0.0,
            usage_gpus: 0.0,
            usage_cpus: 0.0,
            usage_memory_gib: 0.0,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            model_version: Some("v1".into()),
            inferences: 1,
            end_reason: None,
        }
    }

    #[test]
    fn gateway_rows_carry_their_token_cost_as_a_direct_cost() {
        let r = to_record(&row(
            "gateway",
            &[
                ("team", "web"),
                ("cost", "0.018000000"),
                ("currency", "USD"),
            ],
        ))
        .unwrap();
        assert_eq!(
            r.direct_cost,
            Some(DirectCost {
                amount: 0.018,
                currency: "USD".into()
            })
        );
        // No pricing: no cost.
        let r = to_record(&row(
            "gateway",
            &[("cost", "0.000000000"), ("currency", "")],
        ))
        .unwrap();
        assert_eq!(r.direct_cost, None);
        // A cost without its currency is never summed as if it were in another.
        let e = to_record(&row("gateway", &[("cost", "0.5")])).unwrap_err();
        assert!(e.contains("tag currency"), "{e}");
        let e = to_record(&row("import", &[("cost", "cheap"), ("currency", "USD")])).unwrap_err();
        assert!(e.contains("tag cost: \"cheap\" is not an amount"), "{e}");
        // A job's tags are the submitter's: never read as money.
        assert_eq!(
            to_record(&UsageRow {
                workload: "job".into(),
                attempt: 1,
                ..row("job", &[("cost", "5"), ("currency", "USD")])
            })
            .unwrap()
            .direct_cost,
            None
        );
    }

    #[test]
    fn a_caller_sees_all_spend_as_admin_else_its_teams() {
        let id = |role: Role, team: Option<&str>| Identity {
            token_id: "t".into(),
            name: "n".into(),
            team: team.map(String::from),
            role,
        };
        let tags = |team: Option<&str>| Tags {
            team: team.map(String::from),
            ..Tags::default()
        };
        let admin = Visibility::of(&id(Role::Admin, None));
        assert!(admin.sees(&tags(Some("ml"))) && admin.sees(&tags(None)));
        for role in [Role::Viewer, Role::Member, Role::Maintainer] {
            let v = Visibility::of(&id(role, Some("ml")));
            assert!(v.sees(&tags(Some("ml"))));
            assert!(!v.sees(&tags(Some("web"))) && !v.sees(&tags(None)));
        }
    }
}
