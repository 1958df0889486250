//! MLflow's error shape and the mapping of store errors onto it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_store::StoreError;
use serde_json::json;

/// An error as MLflow reports it: an `error_code` string, a message, and the HTTP status MLflow
/// uses for that code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl MlflowError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        MlflowError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "missing bearer token: set MLFLOW_TRACKING_TOKEN to a Plinth token",
        )
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }
}

impl From<StoreError> for MlflowError {
    fn from(e: StoreError) -> Self {
        let message = e.message().to_owned();
        match e {
            StoreError::NotFound(_) => MlflowError::not_found(message),
            StoreError::AlreadyExists(_) => {
                MlflowError::new(StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", message)
            }
            // The store reports refused values (a changed param, a bad filter, a deleted run)
            // as conflicts; MLflow calls them invalid parameter values.
            StoreError::Conflict(_) => MlflowError::invalid(message),
            StoreError::Unavailable(_) => MlflowError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                message,
            ),
            StoreError::Corrupt(_) | StoreError::Internal(_) => MlflowError::internal(message),
        }
    }
}

/// Lifecycle errors in MLflow's terms; a refused promotion is `INVALID_STATE` (with the
/// status 400, so clients do not retry it) and carries the failed gates in its message.
impl From<crate::lifecycle::LifecycleError> for MlflowError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use plinth_types::ErrorCode;
        let message = if e.details.is_empty() {
            e.message
        } else {
            format!("{}: {}", e.message, e.details.join("; "))
        };
        match e.code {
            ErrorCode::NotFound => MlflowError::not_found(message),
            ErrorCode::PermissionDenied => MlflowError::permission_denied(message),
            ErrorCode::Unauthenticated => MlflowError::unauthenticated(),
            ErrorCode::AlreadyExists => {
                MlflowError::new(StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", message)
            }
            ErrorCode::Conflict => {
                MlflowError::new(StatusCode::BAD_REQUEST, "INVALID_STATE", message)
            }
            ErrorCode::Unavailable => MlflowError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                message,
            ),
            ErrorCode::Internal => MlflowError::internal(message),
            _ => MlflowError::invalid(message),
        }
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error_code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_mlflow_codes() {
        let e = MlflowError::from(StoreError::NotFound("x".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
        );
        let e = MlflowError::from(StoreError::AlreadyExists("x".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS")
        );
        let e = MlflowError::from(StoreError::Conflict("x".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
        );
        let e = MlflowError::from(StoreError::Internal("x".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
