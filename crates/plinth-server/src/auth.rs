//! Bearer-token authentication as an extractor: a handler that takes `Caller` is authenticated.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use plinth_types::{ErrorCode, Identity};

use crate::AppState;
use crate::error::ApiErrorResponse;

/// The authenticated caller of an API route.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

/// The token in `Authorization: Bearer <token>`, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiErrorResponse;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            return Err(ApiErrorResponse::new(
                ErrorCode::Unauthenticated,
                "missing bearer token: send Authorization: Bearer <token>",
            ));
        };
        let who = state.platform.authenticate(token).await?;
        Ok(Caller(who))
    }
}

/// Middleware for routes that read the caller from the request's extensions (the MLflow
/// routes): a valid bearer token adds its [`Identity`]; a missing or bad one adds nothing and the
/// route answers 401 in its own error shape.
pub async fn identify(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (mut parts, body) = req.into_parts();
    let token = bearer(&parts).map(str::to_string);
    if let Some(token) = token
        && let Ok(who) = state.platform.authenticate(&token).await
    {
        parts.extensions.insert(who);
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}
