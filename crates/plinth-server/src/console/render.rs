//! Templates (embedded at build time) and the HTML error page.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::value::{Serde, Value};
use minijinja::{Environment, UndefinedBehavior, context};
use plinth_core::CoreError;
use plinth_types::{ErrorCode, Identity};
use serde::Serialize;

use super::views::Me;

/// Every template, by name. `.html` names turn on HTML auto-escaping.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("login.html", include_str!("../../templates/login.html")),
    (
        "overview.html",
        include_str!("../../templates/overview.html"),
    ),
    ("pools.html", include_str!("../../templates/pools.html")),
    ("teams.html", include_str!("../../templates/teams.html")),
    ("queues.html", include_str!("../../templates/queues.html")),
    ("jobs.html", include_str!("../../templates/jobs.html")),
    ("job.html", include_str!("../../templates/job.html")),
    ("audit.html", include_str!("../../templates/audit.html")),
    (
        "contracts.html",
        include_str!("../../templates/contracts.html"),
    ),
    (
        "contract.html",
        include_str!("../../templates/contract.html"),
    ),
    ("verify.html", include_str!("../../templates/verify.html")),
    ("lineage.html", include_str!("../../templates/lineage.html")),
    (
        "deployments.html",
        include_str!("../../templates/deployments.html"),
    ),
    ("models.html", include_str!("../../templates/models.html")),
    ("model.html", include_str!("../../templates/model.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("cost.html", include_str!("../../templates/cost.html")),
];

pub(super) fn environment() -> Result<&'static Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Printing a missing variable is a bug in a template, not an empty string.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| format!("template {name}: {e:#}"))?;
        }
        Ok(env)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Renders `template` with the page data plus the navigation context (`me`, `active`).
pub fn render<T: Serialize>(
    template: &str,
    me: Option<&Me>,
    active: &str,
    page: &T,
) -> Result<String, String> {
    let env = environment()?;
    let tmpl = env.get_template(template).map_err(|e| format!("{e:#}"))?;
    let ctx = context! {
        me => Value::from(Serde(me)),
        active => active,
        ..Value::from(Serde(page))
    };
    tmpl.render(ctx)
        .map_err(|e| format!("rendering {template}: {e:#}"))
}

/// A page, or the error page when rendering itself fails.
pub fn page<T: Serialize>(
    status: StatusCode,
    template: &str,
    me: Option<&Me>,
    active: &str,
    data: &T,
) -> Response {
    match render(template, me, active, data) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ConsoleError::internal(e).into_response(),
    }
}

/// An error shown as an HTML page with its message (boxed: it travels in `Result`s).
#[derive(Debug)]
pub struct ConsoleError(Box<ErrorBody>);

#[derive(Debug)]
struct ErrorBody {
    status: StatusCode,
    title: String,
    message: String,
    me: Option<Me>,
}

#[derive(Serialize)]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl ConsoleError {
    pub fn new(status: StatusCode, title: impl Into<String>, message: impl Into<String>) -> Self {
        ConsoleError(Box::new(ErrorBody {
            status,
            title: title.into(),
            message: message.into(),
            me: None,
        }))
    }

    /// A failure of the console itself; the details go to the log, not the page.
    pub fn internal(detail: String) -> Self {
        tracing::error!(error = %detail, "console page failed");
        ConsoleError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The console could not render this page; see the server log.",
        )
    }

    pub fn not_found(path: &str) -> Self {
        ConsoleError::new(
            StatusCode::NOT_FOUND,
            "Page not found",
            format!("There is no console page at {path}."),
        )
    }

    /// Shows the navigation bar of `who` above the error.
    pub fn for_user(mut self, who: &Identity) -> Self {
        self.0.me = Some(Me::from(who));
        self
    }

    /// The error of an operation, for the signed-in `who`.
    pub fn core(e: CoreError, who: &Identity) -> Self {
        let api = e.to_api();
        if matches!(api.code, ErrorCode::Internal | ErrorCode::Unavailable) {
            tracing::error!(error = %e, "console operation failed");
        }
        let status = StatusCode::from_u16(api.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let title = match api.code {
            ErrorCode::PermissionDenied => "Permission denied",
            ErrorCode::NotFound => "Not found",
            ErrorCode::InvalidArgument => "Invalid request",
            ErrorCode::Unavailable => "Service unavailable",
            ErrorCode::Unauthenticated => "Signed out",
            ErrorCode::Conflict => "Conflict",
            _ => "Something went wrong",
        };
        let mut message = api.message;
        for d in api.details {
            message.push('\n');
            message.push_str(&d);
        }
        ConsoleError(Box::new(ErrorBody {
            status,
            title: title.into(),
            message,
            me: Some(Me::from(who)),
        }))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let e = *self.0;
        let data = ErrorPage {
            status: e.status.as_u16(),
            title: &e.title,
            message: &e.message,
        };
        match render("error.html", e.me.as_ref(), "", &data) {
            Ok(html) => (e.status, Html(html)).into_response(),
            // The last resort must not fail: plain text, no markup to escape.
            Err(err) => {
                tracing::error!(error = %err, "console error page failed");
                (e.status, format!("{}: {}", e.title, e.message)).into_response()
            }
        }
    }
}

/// Maps an operation's error to the error page of the caller.
pub trait OrPage<T> {
    fn or_page(self, who: &Identity) -> Result<T, ConsoleError>;
}

impl<T> OrPage<T> for Result<T, CoreError> {
    fn or_page(self, who: &Identity) -> Result<T, ConsoleError> {
        self.map_err(|e| ConsoleError::core(e, who))
    }
}
