//! `POST /api/v1/models:gc`: deletes the artifacts of model versions archived, or deprecated
//! past their sunset, for longer than the retention (see `plinth_registry::retention`). Admins
//! only; the server also runs it hourly when `registry.archived_artifact_retention` is set.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use plinth_registry::retention::{self, GcReport};
use plinth_types::{ApiError, ErrorCode};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::parse_json;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/models:gc", post(collect))
}

/// What to collect.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcRequest {
    /// Report what would be deleted and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The retention to apply (`30d`, `12h`, `90m`, ...); defaults to the server's
    /// `registry.archived_artifact_retention`.
    #[serde(default)]
    pub retention: Option<String>,
}

/// Deletes the artifacts of model versions archived (or deprecated past their sunset) longer
/// ago than the retention, keeping blobs that runs, logged models or other versions still use;
/// each version keeps its metadata and gets the tag `plinth.artifacts_deleted`. Admins only;
/// every collected version is audited (`model.artifacts_delete`).
#[utoipa::path(post, path = "/api/v1/models:gc", tag = "models", security(("bearer" = [])),
    request_body = GcRequest,
    responses((status = 200, body = GcReport), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn collect(
    State(s): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> Result<Json<GcReport>, ApiErrorResponse> {
    if !who.is_admin() {
        return Err(ApiErrorResponse::new(
            ErrorCode::PermissionDenied,
            format!(
                "{} has role {}; collecting model artifacts needs admin",
                who.actor(),
                who.role
            ),
        ));
    }
    let req: GcRequest = if body.iter().all(u8::is_ascii_whitespace) {
        GcRequest::default()
    } else {
        parse_json(&body)?
    };
    let Some(registry) = s.registry.clone() else {
        return Err(ApiErrorResponse::new(
            ErrorCode::NotFound,
            "this server does not serve the model registry",
        ));
    };
    let retention = match &req.retention {
        Some(text) => plinth_types::job::parse_duration(text).map_err(|e| {
            ApiErrorResponse::new(ErrorCode::InvalidArgument, format!("retention: {e}"))
        })?,
        None => registry.archived_artifact_retention.ok_or_else(|| {
            ApiErrorResponse::new(
                ErrorCode::InvalidArgument,
                "retention: none given and the server has no \
                 registry.archived_artifact_retention; pass one such as 30d",
            )
        })?,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let report = retention::collect(&registry, &who.actor(), retention, now, req.dry_run)
        .await
        .map_err(|e| {
            let code = match e.status.as_u16() {
                400 => ErrorCode::InvalidArgument,
                404 => ErrorCode::NotFound,
                _ => ErrorCode::Internal,
            };
            if code == ErrorCode::Internal {
                tracing::error!(error = %e.message, "model artifact collection failed");
            }
            ApiErrorResponse::new(code, e.message)
        })?;
    Ok(Json(report))
}
