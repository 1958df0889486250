//! The console session: the API token kept in an HttpOnly cookie and checked on every page.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_core::CoreError;
use plinth_types::Identity;

use super::render::ConsoleError;
use crate::AppState;

pub const COOKIE_NAME: &str = "plinth_session";
pub const LOGIN_PATH: &str = "/console/login";

/// Bytes a cookie value may hold as they are (RFC 6265 cookie-octet, without `%`, which
/// starts an escape here).
fn plain_cookie_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// A token as a cookie value. Generated tokens pass unchanged; anything else is %-escaped.
pub fn encode_value(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    for b in token.bytes() {
        if plain_cookie_byte(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_value(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The session token from the request's `Cookie` headers, if any.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .and_then(|(_, value)| decode_value(value.trim().trim_matches('"')))
        .filter(|t| !t.is_empty())
}

/// `Set-Cookie` that stores the token.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/",
        encode_value(token)
    )
}

/// `Set-Cookie` that removes the session.
pub fn clear_cookie() -> &'static str {
    "plinth_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
}

/// A 303 to `location`, optionally with a `Set-Cookie`.
pub fn see_other(location: &'static str, cookie: Option<&str>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(c)
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The signed-in caller of a console page. Without a valid session cookie the request is
/// redirected to the sign-in page (and a stale cookie is removed).
#[derive(Debug, Clone)]
pub struct Session(pub Identity);

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = session_token(&parts.headers) else {
            return Err(see_other(LOGIN_PATH, None));
        };
        match state.platform.authenticate(&token).await {
            Ok(who) => Ok(Session(who)),
            Err(CoreError::Unauthenticated(_)) => Err(see_other(LOGIN_PATH, Some(clear_cookie()))),
            Err(e) => {
                tracing::error!(error = %e, "console session check failed");
                Err(ConsoleError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    "The session could not be checked; try again shortly.",
                )
                .into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_stored_verbatim() {
        let t = "plt_0123456789ab_00ff";
        assert_eq!(encode_value(t), t);
        assert_eq!(
            set_cookie(t),
            "plinth_session=plt_0123456789ab_00ff; HttpOnly; SameSite=Strict; Path=/"
        );
    }

    #[test]
    fn odd_tokens_round_trip() {
        for t in ["a b;c=d,\"e\\f%g", "naïve-token-with-unicode", "%41"] {
            let enc = encode_value(t);
            assert!(enc.bytes().all(plain_cookie_byte) || enc.contains('%'));
            assert!(!enc.contains(';') && !enc.contains(' '));
            assert_eq!(decode_value(&enc).as_deref(), Some(t));
        }
        assert_eq!(decode_value("%4"), None);
        assert_eq!(decode_value("%zz"), None);
    }

    #[test]
    fn finds_the_session_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; plinth_session=abc%20d"),
        );
        assert_eq!(session_token(&h).as_deref(), Some("abc d"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("plinth_session=xyz"),
        );
        assert_eq!(session_token(&h).as_deref(), Some("xyz"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("plinth_session="));
        assert_eq!(session_token(&h), None);
        assert_eq!(session_token(&HeaderMap::new()), None);
    }
}
