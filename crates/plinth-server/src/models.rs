//! Plinth's model API over the registry: versions with their typed fields (code, data,
//! features, prompts, parameters, eval sets and metrics, deployment config), diffs between
//! versions, release gates, promotion, approvals, rollback and deprecation. The logic lives in
//! `plinth_registry::lifecycle`; these handlers extract, call it and map its errors.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use plinth_config::kinds::{
    DATASET_VERSION_KIND, DEPLOYMENT_STATUS_KIND, RETRAIN_POLICY_KIND, RETRAIN_STATUS_KIND,
    RetrainPolicySpec,
};
use plinth_registry::lifecycle::{
    self, Approval, ApproveRequest, DeprecateRequest, DeprecateResult, DiffView, GateReport,
    LifecycleError, MlflowSync, ModelSummary, ModelView, PromoteRequest, PromoteResult,
    RegisterRequest, RollbackRequest, RollbackResult, VersionView,
};
use plinth_registry::manifest::ManifestPatch;
use plinth_store::{Batch, Op, Precondition, Store};
use plinth_types::audit::NewAuditEvent;
use plinth_types::job::SubmitJobRequest;
use plinth_types::{
    API_VERSION, ApiError, Document, ErrorCode, Identity, ObjectMeta, Role, StoredObject,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::api::parse_json;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models", get(list_models))
        .route("/api/v1/models/{name}", get(get_model))
        .route("/api/v1/models/{name}/versions", post(register_version))
        .route("/api/v1/models/{name}/versions/{version}", get(get_version))
        .route(
            "/api/v1/models/{name}/versions/{version}/manifest",
            post(set_manifest),
        )
        .route("/api/v1/models/{name}/diff", get(diff_versions))
        .route("/api/v1/models/{name}/versions/{version}/gates", get(gates))
        .route(
            "/api/v1/models/{name}/versions/{version}/promote",
            post(promote),
        )
        .route(
            "/api/v1/models/{name}/versions/{version}/approve",
            post(approve),
        )
        .route(
            "/api/v1/models/{name}/versions/{version}/deprecate",
            post(deprecate),
        )
        .route("/api/v1/models/{name}/rollback", post(rollback))
        .route("/api/v1/models/{name}/retrain", get(retrain_status))
}

type ApiResult<T> = Result<Json<T>, ApiErrorResponse>;

fn err(e: LifecycleError) -> ApiErrorResponse {
    if e.code == ErrorCode::Internal {
        tracing::error!(error = %e.message, "model lifecycle operation failed");
    }
    ApiErrorResponse(ApiError {
        code: e.code,
        message: e.message,
        details: e.details,
    })
}

fn store(s: &AppState) -> &Store {
    s.platform.store()
}

/// Every registered model the caller may see (its team's, those without a team; admins: all)
/// with its staging, canary and production versions.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = Vec<ModelSummary>), (status = 401, body = ApiError)))]
pub async fn list_models(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Vec<ModelSummary>> {
    let mut models = lifecycle::list_models(store(&s)).await.map_err(err)?;
    models.retain(|m| lifecycle::may_read(&who, m.team.as_deref()));
    Ok(Json(models))
}

/// A model: its stages, production history, release policy, generation and versions.
#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name")),
    responses((status = 200, body = ModelView), (status = 401, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn get_model(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<ModelView> {
    lifecycle::check_visible(store(&s), &who, &name)
        .await
        .map_err(err)?;
    Ok(Json(
        lifecycle::get_model(store(&s), &name).await.map_err(err)?,
    ))
}

/// Registers a new version (creating the model when new) with its typed fields, and adds
/// `model:NAME@VERSION` to the lineage graph with edges from its run and datasets. Members and
/// above.
#[utoipa::path(post, path = "/api/v1/models/{name}/versions", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name")),
    request_body = RegisterRequest,
    responses((status = 201, body = VersionView), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn register_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<VersionView>), ApiErrorResponse> {
    let req: RegisterRequest = parse_json(&body)?;
    let st = store(&s);
    let mv = lifecycle::register(st, &who, &name, &req)
        .await
        .map_err(err)?;
    let view = lifecycle::get_version(st, &name, &mv.version)
        .await
        .map_err(err)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One version with its typed fields, stages, approvals and deprecation.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name"),
        ("version" = String, Path, description = "the version number")),
    responses((status = 200, body = VersionView), (status = 401, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn get_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<VersionView> {
    lifecycle::check_visible(store(&s), &who, &name)
        .await
        .map_err(err)?;
    Ok(Json(
        lifecycle::get_version(store(&s), &name, &version)
            .await
            .map_err(err)?,
    ))
}

/// Sets typed fields of a version; fields left out are kept. Members and above.
#[utoipa::path(post, path = "/api/v1/models/{name}/versions/{version}/manifest", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name"),
        ("version" = String, Path, description = "the version number")),
    request_body = ManifestPatch,
    responses((status = 200, body = VersionView), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn set_manifest(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<VersionView> {
    let patch: ManifestPatch = parse_json(&body)?;
    let st = store(&s);
    lifecycle::set_manifest(st, &who, &name, &version, &patch)
        .await
        .map_err(err)?;
    Ok(Json(
        lifecycle::get_version(st, &name, &version)
            .await
            .map_err(err)?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The first version.
    pub a: String,
    /// The second version.
    pub b: String,
}

/// What changed from version `a` to version `b`, field by field.
#[utoipa::path(get, path = "/api/v1/models/{name}/diff", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name"), DiffQuery),
    responses((status = 200, body = DiffView), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 404, body = ApiError)))]
pub async fn diff_versions(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<DiffView> {
    lifecycle::check_visible(store(&s), &who, &name)
        .await
        .map_err(err)?;
    Ok(Json(
        lifecycle::diff_versions(store(&s), &name, &q.a, &q.b)
            .await
            .map_err(err)?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GatesQuery {
    /// `staging`, `canary` or `production`.
    pub to: String,
}

/// Evaluates the release gates of a version for a target without promoting it.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/gates", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name"),
        ("version" = String, Path, description = "the version number"), GatesQuery),
    responses((status = 200, body = GateReport), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 404, body = ApiError)))]
pub async fn gates(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<GatesQuery>,
) -> ApiResult<GateReport> {
    lifecycle::check_visible(store(&s), &who, &name)
        .await
        .map_err(err)?;
    Ok(Json(
        lifecycle::gates(store(&s), &name, &version, &q.to)
            .await
            .map_err(err)?,
    ))
}

/// Promotes a version to staging, canary or production after evaluating every gate of its
/// ReleasePolicy. Refused (409, the verdicts in `details`) when a gate fails, unless an admin
/// overrides with a reason (audited). Two promotions racing: one wins, the other gets 409.
/// MLflow's stage and alias of the target follow.
#[utoipa::path(post, path = "/api/v1/models/{name}/versions/{version}/promote", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name"),
        ("version" = String, Path, description = "the version number")),
    request_body = PromoteRequest,
    responses((status = 200, body = PromoteResult), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "a gate failed (verdicts in details), or another change committed first")))]
pub async fn promote(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<PromoteResult> {
    let req: PromoteRequest = parse_json(&body)?;
    Ok(Json(
        lifecycle::promote(store(&s), &who, &name, &version, &req, MlflowSync::Standard)
            .await
            .map_err(err)?,
    ))
}

/// Approves a version: maintainers and admins other than its author, once each.
#[utoipa::path(post, path = "/api/v1/models/{name}/versions/{version}/approve", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name"),
        ("version" = String, Path, description = "the version number")),
    request_body = ApproveRequest,
    responses((status = 200, body = Vec<Approval>), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn approve(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Vec<Approval>> {
    let req: ApproveRequest = parse_json(&body)?;
    Ok(Json(
        lifecycle::approve(store(&s), &who, &name, &version, req.comment)
            .await
            .map_err(err)?,
    ))
}

/// Deprecates a version with a sunset date; lists what still uses it and tags it so MLflow
/// clients see the warning. Maintainers and admins.
#[utoipa::path(post, path = "/api/v1/models/{name}/versions/{version}/deprecate", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name"),
        ("version" = String, Path, description = "the version number")),
    request_body = DeprecateRequest,
    responses((status = 200, body = DeprecateResult), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn deprecate(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<DeprecateResult> {
    let req: DeprecateRequest = parse_json(&body)?;
    Ok(Json(
        lifecycle::deprecate(store(&s), &who, &name, &version, &req)
            .await
            .map_err(err)?,
    ))
}

/// Restores the previous production version in one step (audited). Maintainers and admins.
#[utoipa::path(post, path = "/api/v1/models/{name}/rollback", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name")),
    request_body = RollbackRequest,
    responses((status = 200, body = RollbackResult), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn rollback(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<RollbackResult> {
    let req: RollbackRequest = parse_json(&body)?;
    Ok(Json(
        lifecycle::rollback(store(&s), &who, &name, req.reason)
            .await
            .map_err(err)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Retraining: RetrainPolicy objects submit their job template through the job controller

/// How often the retraining controller looks at its policies.
const RETRAIN_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The stored state of one RetrainPolicy (`RetrainStatus`, same name).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrainStatus {
    /// Jobs submitted so far.
    pub runs: u64,
    /// When the last trigger fired (or the policy was first seen), seconds since the epoch.
    pub last_at: i64,
    /// The newest dataset version number already acted on (or present when first seen).
    pub last_dataset_version: u64,
    /// The newest version of the `onDrift` contract's dataset already checked for drift.
    #[serde(default)]
    pub last_drift_version: u64,
    /// When the newest canary rollback of the `onCanaryRollback` deployment already acted on
    /// happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback_at: Option<String>,
    /// The jobs submitted, oldest first (the last 20).
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<String>,
    /// Why the last submission failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One RetrainPolicy of a model with its state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrainView {
    pub policy: String,
    pub team: Option<String>,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub status: RetrainStatus,
}

/// The RetrainPolicies of a model and what each has submitted.
#[utoipa::path(get, path = "/api/v1/models/{name}/retrain", tag = "models", security(("bearer" = [])),
    params(("name" = String, Path, description = "the registered model's name")),
    responses((status = 200, body = Vec<RetrainView>), (status = 401, body = ApiError)))]
pub async fn retrain_status(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<Vec<RetrainView>> {
    let st = store(&s);
    let mut out = Vec::new();
    let policies = st
        .list_objects(RETRAIN_POLICY_KIND)
        .await
        .map_err(|e| ApiErrorResponse::from(plinth_core::CoreError::from(e)))?;
    for p in policies {
        let visible = plinth_core::authorize_read(&who, p.team.as_deref());
        let spec: Option<RetrainPolicySpec> = serde_json::from_value(p.document.spec.clone()).ok();
        if !visible || spec.is_none_or(|sp| sp.model != name) {
            continue;
        }
        let status = st
            .get_object(RETRAIN_STATUS_KIND, &p.name)
            .await
            .ok()
            .flatten()
            .and_then(|o| serde_json::from_value(o.document.spec).ok())
            .unwrap_or_default();
        out.push(RetrainView {
            policy: p.name,
            team: p.team,
            spec: p.document.spec,
            status,
        });
    }
    Ok(Json(out))
}

/// Starts the retraining controller (where the server runs jobs).
pub fn spawn_retrainer(state: AppState) {
    if state.jobs.is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            retrain_tick(&state).await;
            tokio::time::sleep(RETRAIN_TICK).await;
        }
    });
}

async fn retrain_tick(s: &AppState) {
    let Ok(policies) = store(s).list_objects(RETRAIN_POLICY_KIND).await else {
        return;
    };
    if policies.is_empty() {
        return;
    }
    // The newest passing version of every dataset, read once per tick for all policies.
    let latest = match latest_passed(store(s)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "retraining: dataset versions not read");
            return;
        }
    };
    for p in policies {
        if let Err(e) = retrain_one(s, &p, &latest).await {
            tracing::warn!(policy = %p.name, error = %e, "retraining policy not evaluated");
        }
    }
}

/// The newest version number of each contract's dataset that passed its contract.
async fn latest_passed(st: &Store) -> Result<std::collections::HashMap<String, u64>, String> {
    let mut out = std::collections::HashMap::new();
    for o in st
        .list_objects(DATASET_VERSION_KIND)
        .await
        .map_err(|e| e.to_string())?
    {
        let spec = &o.document.spec;
        if let (Some(c), Some("passed"), Some(v)) = (
            spec["contract"].as_str(),
            spec["status"].as_str(),
            spec["version"].as_u64(),
        ) {
            let e = out.entry(c.to_string()).or_insert(0);
            *e = (*e).max(v);
        }
    }
    Ok(out)
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn retrain_one(
    s: &AppState,
    p: &StoredObject,
    latest: &std::collections::HashMap<String, u64>,
) -> Result<(), String> {
    let st = store(s);
    let spec: RetrainPolicySpec =
        serde_json::from_value(p.document.spec.clone()).map_err(|e| e.to_string())?;
    let stored = st
        .get_object(RETRAIN_STATUS_KIND, &p.name)
        .await
        .map_err(|e| e.to_string())?;
    let dataset = spec
        .on_dataset
        .as_ref()
        .map(|d| (d.clone(), latest.get(d).copied().unwrap_or(0)));
    let drift_latest = spec
        .on_drift
        .as_ref()
        .map_or(0, |c| latest.get(c).copied().unwrap_or(0));
    let Some(stored) = stored else {
        // First sight: what exists now is the baseline; the schedule counts from now.
        let rollback_at = match &spec.on_canary_rollback {
            Some(d) => newest_rollback(st, d).await?.map(|(at, _)| at),
            None => None,
        };
        let status = RetrainStatus {
            last_at: unix_now(),
            last_dataset_version: dataset.as_ref().map_or(0, |d| d.1),
            last_drift_version: drift_latest,
            last_rollback_at: rollback_at,
            ..RetrainStatus::default()
        };
        return save_retrain(s, p, None, &status, None).await;
    };
    let mut status: RetrainStatus =
        serde_json::from_value(stored.document.spec.clone()).map_err(|e| e.to_string())?;
    let now = unix_now();
    let who = Identity {
        token_id: "system".into(),
        name: format!("retrain:{}", p.name),
        team: None,
        role: Role::Admin,
    };
    // One trigger per look; one that is also due fires on the next look (a second later).
    let mut trigger = None;
    let mut extra = serde_json::Map::new();
    let mut changed = false;
    if let Some((d, v)) = &dataset
        && *v > status.last_dataset_version
    {
        status.last_dataset_version = *v;
        trigger = Some(format!("dataset {d}-v{v}"));
    }
    if trigger.is_none()
        && let Some(c) = &spec.on_drift
        && drift_latest > status.last_drift_version
    {
        // Each new passing version is compared with the contract's drift reference once.
        status.last_drift_version = drift_latest;
        changed = true;
        match s
            .platform
            .dataset_drift(&who, c, None, Some(drift_latest))
            .await
        {
            Ok(d) if d.verdict == "drift" && d.current != d.reference => {
                extra.insert("reference".into(), serde_json::json!(d.reference));
                extra.insert(
                    "driftedColumns".into(),
                    serde_json::json!(d.drifted_columns),
                );
                trigger = Some(format!("drift {c}-v{drift_latest}"));
            }
            Ok(_) => {}
            Err(e) => {
                status.last_error = Some(format!("drift of {c}-v{drift_latest}: {e}"));
            }
        }
    }
    if trigger.is_none()
        && let Some(dep) = &spec.on_canary_rollback
        && let Some((at, rollback)) = newest_rollback(st, dep).await?
        && status
            .last_rollback_at
            .as_deref()
            .is_none_or(|l| at.as_str() > l)
    {
        status.last_rollback_at = Some(at);
        extra.insert("rollback".into(), rollback);
        trigger = Some(format!("canary-rollback {dep}"));
    }
    if trigger.is_none()
        && let Some(every) = spec.every_seconds
        && now - status.last_at >= every as i64
    {
        trigger = Some("schedule".to_string());
    }
    let Some(trigger) = trigger else {
        if changed {
            save_retrain(s, p, Some(&stored), &status, None).await?;
        }
        return Ok(());
    };
    let Some(jobs) = &s.jobs else { return Ok(()) };
    let n = status.runs + 1;
    let prefix: String = p.name.chars().take(40).collect();
    let job_name = format!("retrain-{prefix}-{n}");
    let mut job = spec.job.clone();
    job.tags.insert("retrain-policy".into(), p.name.clone());
    job.tags.insert("model".into(), spec.model.clone());
    job.tags.insert("trigger".into(), trigger.replace(' ', ":"));
    let submitted = jobs
        .submit(
            &who,
            SubmitJobRequest {
                name: Some(job_name.clone()),
                spec: job,
            },
        )
        .await;
    status.last_at = now;
    status.last_trigger = Some(trigger.clone());
    match submitted {
        Ok(_) => {
            status.runs = n;
            status.last_error = None;
            status.jobs.push(job_name.clone());
            let skip = status.jobs.len().saturating_sub(20);
            status.jobs.drain(..skip);
        }
        // Submitted before the status was saved (a restart in between): count it.
        Err(e) if e.code() == ErrorCode::AlreadyExists => {
            status.runs = n;
        }
        Err(e) => status.last_error = Some(e.to_string()),
    }
    let mut detail = serde_json::json!({
        "model": spec.model, "trigger": trigger, "job": job_name, "error": status.last_error,
    });
    if let Some(d) = detail.as_object_mut() {
        d.extend(extra);
    }
    save_retrain(s, p, Some(&stored), &status, Some(detail)).await
}

/// The newest automatic canary rollback of `deployment` (from its server-managed
/// `DeploymentStatus`, written by the gateway): when it happened and its record.
async fn newest_rollback(
    st: &Store,
    deployment: &str,
) -> Result<Option<(String, serde_json::Value)>, String> {
    let Some(o) = st
        .get_object(DEPLOYMENT_STATUS_KIND, deployment)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let newest = o.document.spec["rollbacks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["at"].as_str()?.to_string(), r.clone())))
        .max_by(|a, b| a.0.cmp(&b.0));
    Ok(newest)
}

async fn save_retrain(
    s: &AppState,
    p: &StoredObject,
    current: Option<&StoredObject>,
    status: &RetrainStatus,
    audit: Option<serde_json::Value>,
) -> Result<(), String> {
    let ts = s.platform.now();
    let document = Document {
        api_version: API_VERSION.to_string(),
        kind: RETRAIN_STATUS_KIND.to_string(),
        metadata: ObjectMeta {
            name: p.name.clone(),
            ..Default::default()
        },
        spec: serde_json::to_value(status).map_err(|e| e.to_string())?,
    };
    let digest = plinth_core::document_digest(&document);
    let object = StoredObject {
        kind: RETRAIN_STATUS_KIND.to_string(),
        name: p.name.clone(),
        team: p.team.clone(),
        document,
        digest: digest.clone(),
        generation: current.map_or(1, |c| c.generation + 1),
        created_at: current.map_or(ts.clone(), |c| c.created_at.clone()),
        updated_at: ts.clone(),
        updated_by: "system:retrain".into(),
    };
    let precondition = match current {
        Some(c) => Precondition::Generation(c.generation),
        None => Precondition::Absent,
    };
    let mut batch = Batch::new().op(Op::PutObject {
        object,
        precondition,
    });
    if let Some(detail) = audit {
        batch = batch.event(NewAuditEvent {
            ts,
            actor: "system:retrain".into(),
            action: "model.retrain".into(),
            kind: RETRAIN_STATUS_KIND.to_string(),
            name: p.name.clone(),
            team: p.team.clone(),
            before_digest: current.map(|c| c.digest.clone()),
            after_digest: Some(digest),
            detail,
        });
    }
    store(s)
        .commit(batch)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
