//! JSON API handlers under `/api/v1`, plus `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use plinth_types::api::{
    ApplyRequest, ApplyResponse, CreateTokenRequest, CreatedToken, DatasetDrift, DatasetReference,
    DatasetVersion, DeleteResponse, Overview, RegisterDatasetRequest, SetReferenceRequest,
    TokenInfo,
};
use plinth_types::audit::{AuditEvent, AuditFilter, AuditVerification};
use plinth_types::{ErrorCode, Identity, ResourceView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

type ApiResult<T> = Result<Json<T>, ApiErrorResponse>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/kinds", get(kinds))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/resources/{kind}", get(list_resources))
        .route(
            "/api/v1/resources/{kind}/{name}",
            get(get_resource).delete(delete_resource),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/audit/verify", post(audit_verify))
        .route(
            "/api/v1/datacontracts/{name}/versions",
            get(list_dataset_versions).post(register_dataset),
        )
        .route(
            "/api/v1/datacontracts/{name}/versions/{version}",
            get(get_dataset_version),
        )
        .route(
            "/api/v1/datacontracts/{name}/versions/{version}/profile",
            get(get_dataset_profile),
        )
        .route(
            "/api/v1/datacontracts/{name}/versions/{version}/lineage",
            get(get_dataset_lineage),
        )
        .route(
            "/api/v1/datacontracts/{name}/reference",
            get(get_dataset_reference).post(set_dataset_reference),
        )
        .route("/api/v1/datacontracts/{name}/drift", get(dataset_drift))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, body = Health), (status = 503, body = plinth_types::ApiError)))]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Health>, ApiErrorResponse> {
    s.platform.ready().await.map_err(|e| {
        ApiErrorResponse::new(ErrorCode::Unavailable, format!("store not ready: {e}"))
    })?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses(
    (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let text = s.metrics.render(&s).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses(
    (status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::openapi_json(),
    )
        .into_response()
}

/// The identity behind the bearer token.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "access", security(("bearer" = [])), responses(
    (status = 200, body = Identity), (status = 401, body = plinth_types::ApiError)))]
pub async fn whoami(Caller(who): Caller) -> Json<Identity> {
    Json(who)
}

/// Counts of pools, teams, queues and capacity, and recent audit events.
#[utoipa::path(get, path = "/api/v1/overview", tag = "resources", security(("bearer" = [])), responses(
    (status = 200, body = Overview), (status = 401, body = plinth_types::ApiError)))]
pub async fn overview(State(s): State<AppState>, Caller(who): Caller) -> ApiResult<Overview> {
    Ok(Json(s.platform.overview(&who).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KindDescription {
    pub kind: String,
    pub plural: String,
    pub aliases: Vec<String>,
    /// `cluster` (admins change it) or `team` (the owning team's maintainers change it).
    pub scope: String,
    pub description: String,
}

/// The resource kinds this server understands.
#[utoipa::path(get, path = "/api/v1/kinds", tag = "resources", security(("bearer" = [])), responses(
    (status = 200, body = Vec<KindDescription>), (status = 401, body = plinth_types::ApiError)))]
pub async fn kinds(_caller: Caller) -> Json<Vec<KindDescription>> {
    Json(
        plinth_config::kinds::KINDS
            .iter()
            .map(|k| KindDescription {
                kind: k.name.into(),
                plural: k.plural.into(),
                aliases: k.aliases.iter().map(|a| a.to_string()).collect(),
                scope: match k.scope {
                    plinth_config::Scope::Cluster => "cluster".into(),
                    plinth_config::Scope::Team => "team".into(),
                },
                description: k.description.into(),
            })
            .collect(),
    )
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRunQuery {
    /// Validate and show the diff without changing anything.
    pub dry_run: Option<bool>,
}

/// Applies resource documents atomically: all are stored, or none.
///
/// The body is either JSON (`ApplyRequest`) or raw multi-document YAML
/// (`Content-Type: application/yaml`, with `?dry_run=true` for a dry run).
#[utoipa::path(post, path = "/api/v1/apply", tag = "resources", security(("bearer" = [])),
    params(DryRunQuery),
    request_body(content((ApplyRequest = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 200, body = ApplyResponse),
        (status = 400, body = plinth_types::ApiError, description = "an invalid document; nothing applied"),
        (status = 401, body = plinth_types::ApiError),
        (status = 403, body = plinth_types::ApiError),
        (status = 409, body = plinth_types::ApiError),
        (status = 413, body = plinth_types::ApiError)))]
pub async fn apply(
    State(s): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<ApplyResponse> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (documents, dry_run) = if content_type.contains("yaml") {
        let text = std::str::from_utf8(&body).map_err(|_| {
            ApiErrorResponse::new(ErrorCode::InvalidArgument, "request body is not UTF-8 text")
        })?;
        let docs = plinth_config::parse_yaml_documents(text, "request")
            .map_err(|e| ApiErrorResponse::new(ErrorCode::InvalidArgument, e.to_string()))?;
        (docs, q.dry_run.unwrap_or(false))
    } else {
        let req: ApplyRequest = parse_json(&body)?;
        (req.documents, req.dry_run || q.dry_run.unwrap_or(false))
    };
    let (jobs, others): (Vec<_>, Vec<_>) = documents
        .into_iter()
        .partition(|d| d.document.get("kind").and_then(|k| k.as_str()) == Some("Job"));
    if jobs.is_empty() {
        return Ok(Json(s.platform.apply(&who, others, dry_run).await?));
    }
    Ok(Json(
        crate::jobs::apply::apply_with_jobs(&s, &who, others, jobs, dry_run).await?,
    ))
}

/// Parses a JSON body, naming the field that is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiErrorResponse> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body: {path}: {inner}")
        };
        ApiErrorResponse::new(ErrorCode::InvalidArgument, msg)
    })
}

/// Every object of a kind the caller may read.
#[utoipa::path(get, path = "/api/v1/resources/{kind}", tag = "resources", security(("bearer" = [])),
    params(("kind" = String, Path, description = "kind, plural or alias: pool, pools, team, queue, ...")),
    responses((status = 200, body = Vec<ResourceView>), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError)))]
pub async fn list_resources(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(kind): Path<String>,
) -> ApiResult<Vec<ResourceView>> {
    Ok(Json(s.platform.list(&who, &kind).await?))
}

/// One object.
#[utoipa::path(get, path = "/api/v1/resources/{kind}/{name}", tag = "resources", security(("bearer" = [])),
    params(("kind" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ResourceView), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError)))]
pub async fn get_resource(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<ResourceView> {
    Ok(Json(s.platform.get(&who, &kind, &name).await?))
}

/// Deletes one object unless others still reference it.
#[utoipa::path(delete, path = "/api/v1/resources/{kind}/{name}", tag = "resources", security(("bearer" = [])),
    params(("kind" = String, Path), ("name" = String, Path), DryRunQuery),
    responses((status = 200, body = DeleteResponse), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError), (status = 409, body = plinth_types::ApiError)))]
pub async fn delete_resource(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<DryRunQuery>,
) -> ApiResult<DeleteResponse> {
    Ok(Json(
        s.platform
            .delete(&who, &kind, &name, q.dry_run.unwrap_or(false))
            .await?,
    ))
}

/// Tokens the caller may manage (maintainers: their team's; admins: all).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = plinth_types::ApiError),
        (status = 403, body = plinth_types::ApiError)))]
pub async fn list_tokens(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Vec<TokenInfo>> {
    Ok(Json(s.platform.list_tokens(&who).await?))
}

/// Creates a token; the response is the only time its secret is shown.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "access", security(("bearer" = [])),
    request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError)))]
pub async fn create_token(
    State(s): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiErrorResponse> {
    let req: CreateTokenRequest = parse_json(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(s.platform.create_token(&who, req).await?),
    ))
}

/// Revokes a token; it stops working on the next request.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access", security(("bearer" = [])),
    params(("id" = String, Path, description = "the token's public id")),
    responses((status = 200, body = TokenInfo), (status = 401, body = plinth_types::ApiError),
        (status = 403, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn revoke_token(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<TokenInfo> {
    Ok(Json(s.platform.revoke_token(&who, &id).await?))
}

/// Audit events in order, filtered.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditFilter),
    responses((status = 200, body = Vec<AuditEvent>), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError)))]
pub async fn audit_log(
    State(s): State<AppState>,
    Caller(who): Caller,
    Query(filter): Query<AuditFilter>,
) -> ApiResult<Vec<AuditEvent>> {
    Ok(Json(s.platform.audit_log(&who, filter).await?))
}

/// Walks the hash chain and names the first event that does not fit.
#[utoipa::path(post, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = AuditVerification), (status = 401, body = plinth_types::ApiError),
        (status = 403, body = plinth_types::ApiError)))]
pub async fn audit_verify(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<AuditVerification> {
    Ok(Json(s.platform.audit_verify(&who).await?))
}

/// Checks a data file or folder readable by the server against a DataContract and records the
/// result as the contract's next dataset version (`<contract>-v<N>`). Admins and maintainers.
/// A check that fails or errors is recorded too (status `failed` or `error`).
#[utoipa::path(post, path = "/api/v1/datacontracts/{name}/versions", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name")),
    request_body = RegisterDatasetRequest,
    responses((status = 201, body = DatasetVersion), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError), (status = 409, body = plinth_types::ApiError)))]
pub async fn register_dataset(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<DatasetVersion>), ApiErrorResponse> {
    let req: RegisterDatasetRequest = parse_json(&body)?;
    let v = s.platform.register_dataset(&who, &name, req).await?;
    crate::lineage::record_dataset_version(&s, &v).await;
    Ok((StatusCode::CREATED, Json(v)))
}

/// The registered dataset versions of a DataContract, newest first.
#[utoipa::path(get, path = "/api/v1/datacontracts/{name}/versions", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name")),
    responses((status = 200, body = Vec<DatasetVersion>), (status = 401, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError)))]
pub async fn list_dataset_versions(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<Vec<DatasetVersion>> {
    Ok(Json(s.platform.list_dataset_versions(&who, &name).await?))
}

/// A version number from the path: a positive integer.
fn parse_version(text: &str) -> Result<u64, ApiErrorResponse> {
    text.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiErrorResponse::new(
            ErrorCode::InvalidArgument,
            format!("version: {text:?} is not a version number (1, 2, ...)"),
        )
    })
}

/// One registered dataset version with its full check report.
#[utoipa::path(get, path = "/api/v1/datacontracts/{name}/versions/{version}", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name"),
        ("version" = u64, Path, description = "the version number, 1 for the first")),
    responses((status = 200, body = DatasetVersion), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn get_dataset_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<DatasetVersion> {
    let version = parse_version(&version)?;
    Ok(Json(
        s.platform.dataset_version(&who, &name, version).await?,
    ))
}

/// The per-column profile stored with a dataset version: count, nulls, distinct estimate,
/// min/max, mean/std, quantiles, histogram or top categories, and a uniform sample (the same
/// document as `plinth data profile -o json`, so `plinth data drift` can read it).
#[utoipa::path(get, path = "/api/v1/datacontracts/{name}/versions/{version}/profile", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name"),
        ("version" = u64, Path, description = "the version number")),
    responses((status = 200, body = Object, description = "the dataset profile"),
        (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError, description = "no such contract or version, or the version's data could not be read")))]
pub async fn get_dataset_profile(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiErrorResponse> {
    let version = parse_version(&version)?;
    let profile = s.platform.dataset_profile(&who, &name, version).await?;
    Ok(Json(serde_json::to_value(&profile).unwrap_or_default()))
}

/// A dataset version as an OpenLineage dataset (`namespace` `file`, `name` the absolute path of
/// its data) with the `schema`, `dataQualityMetrics` and `dataQualityAssertions` facets.
#[utoipa::path(get, path = "/api/v1/datacontracts/{name}/versions/{version}/lineage", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name"),
        ("version" = u64, Path, description = "the version number")),
    responses((status = 200, body = Object, description = "an OpenLineage dataset: namespace, name, facets"),
        (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn get_dataset_lineage(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiErrorResponse> {
    let version = parse_version(&version)?;
    Ok(Json(
        s.platform.dataset_lineage(&who, &name, version).await?,
    ))
}

/// The drift reference of a DataContract's dataset (404 when none was set: drift then uses
/// version 1).
#[utoipa::path(get, path = "/api/v1/datacontracts/{name}/reference", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name")),
    responses((status = 200, body = DatasetReference), (status = 401, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError)))]
pub async fn get_dataset_reference(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<DatasetReference> {
    match s.platform.dataset_reference(&who, &name).await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiErrorResponse::new(
            ErrorCode::NotFound,
            format!("DataContract {name:?} has no drift reference; drift uses version 1"),
        )),
    }
}

/// Sets the version that drift is measured against by default. Admins and maintainers;
/// recorded in the audit log (`dataset.reference`).
#[utoipa::path(post, path = "/api/v1/datacontracts/{name}/reference", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name")),
    request_body = SetReferenceRequest,
    responses((status = 200, body = DatasetReference), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError), (status = 409, body = plinth_types::ApiError)))]
pub async fn set_dataset_reference(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<DatasetReference> {
    let req: SetReferenceRequest = parse_json(&body)?;
    if req.version == 0 {
        return Err(ApiErrorResponse::new(
            ErrorCode::InvalidArgument,
            "version: must be 1 or more",
        ));
    }
    Ok(Json(
        s.platform
            .set_dataset_reference(&who, &name, req.version)
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriftQuery {
    /// The reference version; default: the stored reference, else version 1.
    #[param(minimum = 1)]
    pub reference: Option<u64>,
    /// The current version; default: the newest.
    #[param(minimum = 1)]
    pub current: Option<u64>,
}

/// Drift between two versions' stored profiles, per column: PSI (bins from the reference) and
/// the two-sample Kolmogorov–Smirnov test for numbers, Jensen–Shannon distance and chi-square
/// for categories, each against its column's thresholds (defaults, or the contract property's
/// `customProperties` `plinth.driftPsi`, `plinth.driftKsPvalue`, `plinth.driftJs`,
/// `plinth.driftChi2Pvalue`), and the verdict.
#[utoipa::path(get, path = "/api/v1/datacontracts/{name}/drift", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name"), DriftQuery),
    responses((status = 200, body = DatasetDrift), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn dataset_drift(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<DriftQuery>,
) -> ApiResult<DatasetDrift> {
    for (field, v) in [("reference", q.reference), ("current", q.current)] {
        if v == Some(0) {
            return Err(ApiErrorResponse::new(
                ErrorCode::InvalidArgument,
                format!("{field}: must be 1 or more"),
            ));
        }
    }
    Ok(Json(
        s.platform
            .dataset_drift(&who, &name, q.reference, q.current)
            .await?,
    ))
}
