//! Error responses: every 4xx/5xx leaves the server as JSON `{"code", "message"}`.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plinth_core::CoreError;
use plinth_types::{ApiError, ErrorCode};

/// An `ApiError` as an HTTP response.
#[derive(Debug)]
pub struct ApiErrorResponse(pub ApiError);

impl ApiErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiErrorResponse(ApiError::new(code, message))
    }
}

impl From<CoreError> for ApiErrorResponse {
    fn from(e: CoreError) -> Self {
        if e.code() == ErrorCode::Internal || e.code() == ErrorCode::Unavailable {
            tracing::error!(error = %e, "operation failed");
        }
        ApiErrorResponse(e.to_api())
    }
}

impl IntoResponse for ApiErrorResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(self.0)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub async fn not_found(req: Request<Body>) -> ApiErrorResponse {
    ApiErrorResponse::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

fn code_for(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::PermissionDenied,
        404 | 405 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        503 => ErrorCode::Unavailable,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::InvalidArgument,
    }
}

/// Rewrites error responses that are not already JSON (framework rejections: bad paths, bad
/// query strings, oversized bodies, wrong methods) into the JSON error shape.
pub async fn json_errors(req: Request<Body>, next: Next) -> Response {
    let is_console = req.uri().path().starts_with("/console");
    let resp = next.run(req).await;
    let status = resp.status();
    if is_console || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text.to_ascii_lowercase()
    };
    let code = if status == StatusCode::METHOD_NOT_ALLOWED {
        ErrorCode::InvalidArgument
    } else {
        code_for(status)
    };
    let mut out = (status, axum::Json(ApiError::new(code, message))).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}
