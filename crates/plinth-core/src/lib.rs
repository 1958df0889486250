//! The operations of Plinth. A handler (HTTP, console, CLI) authenticates a caller and then calls
//! one method of [`Platform`]; that method authorizes, validates, creates ids and timestamps,
//! and hands the store one atomic batch of changes plus their audit events.

mod auth;
mod datasets;
mod diff;
mod error;
mod resources;

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use plinth_store::Store;

pub use auth::{TOKEN_PREFIX, authorize_read, generate_token};
pub use datasets::content_digest;
pub use diff::diff_documents;
pub use error::CoreError;
pub use resources::{document_digest, encode_document};

/// Source of the current time, so tests can pin it.
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<Utc> + Send + Sync>;

/// The platform: the store plus the rules that guard it.
#[derive(Clone)]
pub struct Platform {
    store: Store,
    clock: Clock,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("backend", &self.store.backend().as_str())
            .finish()
    }
}

impl Platform {
    pub fn new(store: Store) -> Self {
        Platform {
            store,
            clock: Arc::new(Utc::now),
        }
    }

    pub fn with_clock(store: Store, clock: Clock) -> Self {
        Platform { store, clock }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Now, as the RFC 3339 UTC string with microseconds that every record uses.
    pub fn now(&self) -> String {
        (self.clock)().to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// True when the store answers.
    pub async fn ready(&self) -> Result<(), CoreError> {
        self.store.ping().await.map_err(CoreError::from)
    }
}
