//! The error every operation returns, with a variant per thing a caller can act on.

use plinth_store::StoreError;
use plinth_types::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Bad input. `details` has one line per problem when there are several.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure of the server itself (executor files, a stored object that does not parse).
    #[error("{0}")]
    Internal(String),
}

impl CoreError {
    pub fn invalid(message: impl Into<String>) -> Self {
        CoreError::Invalid {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::Invalid { .. } => ErrorCode::InvalidArgument,
            CoreError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            CoreError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            CoreError::NotFound(_) => ErrorCode::NotFound,
            CoreError::Conflict(_) => ErrorCode::Conflict,
            CoreError::Store(e) => e.code(),
            CoreError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The wire form. Internal details of store failures stay in the server log.
    pub fn to_api(&self) -> ApiError {
        let message = match self {
            CoreError::Store(e) if e.code() == ErrorCode::Internal => {
                "internal error; see the server log".to_string()
            }
            CoreError::Internal(_) => "internal error; see the server log".to_string(),
            other => other.to_string(),
        };
        let details = match self {
            CoreError::Invalid { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        ApiError {
            code: self.code(),
            message,
            details,
        }
    }
}
