//! The one error-code enum every crate maps its errors to, and its JSON wire form.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What went wrong, in terms a caller can act on. Mapped once to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or named something invalid.
    InvalidArgument,
    /// No token, an unknown token or a revoked token.
    Unauthenticated,
    /// The token is valid but its role or team does not allow this.
    PermissionDenied,
    /// The named object does not exist.
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// The object changed concurrently, or a precondition failed.
    Conflict,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// The server cannot serve this now (store unreachable, shutting down).
    Unavailable,
    /// A bug or an unexpected failure; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code maps to.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The process exit code the CLI uses for this error, so scripts can branch on it.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument => 3,
            ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => 4,
            ErrorCode::NotFound => 5,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => 6,
            ErrorCode::PayloadTooLarge => 3,
            ErrorCode::Unavailable => 7,
            ErrorCode::Internal => 1,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response: `{"code": "...", "message": "..."}`, plus one line
/// per problem in `details` when there are several (an apply with several invalid documents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        for d in &self.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}
