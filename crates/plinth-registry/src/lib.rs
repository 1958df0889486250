//! MLflow-compatible tracking and model registry over the Plinth store.
//!
//! [`mlflow_router`] serves the REST routes the MLflow clients use, under `/api/2.0/mlflow/`,
//! `/api/3.0/mlflow/` and `/api/2.0/mlflow-artifacts/`, with MLflow's error shape
//! (`{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}`) and HTTP statuses.
//!
//! Identity: the router does not authenticate. It reads a [`plinth_types::Identity`] from the
//! request extensions (the server inserts it after checking `Authorization: Bearer`); without
//! one every route answers 401 `UNAUTHENTICATED`. Viewers may call the read routes (gets,
//! searches, downloads); members and above may also write.

mod api;
mod artifacts;
mod error;
pub mod lifecycle;
pub mod manifest;
pub mod retention;

use std::path::PathBuf;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use plinth_store::Store;

pub use error::MlflowError;

/// The largest artifact a single upload may carry unless configured otherwise (5 GiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// The largest JSON request body the tracking routes accept (16 MiB).
pub const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

/// What the routes share.
#[derive(Debug, Clone)]
pub struct RegistryState {
    pub store: Store,
    /// The directory artifacts are stored under: `blobs/sha256/..` holds content by digest,
    /// `tmp/` holds uploads in progress.
    pub artifact_root: PathBuf,
    /// Uploads larger than this are refused with 400 and nothing is kept.
    pub max_upload_bytes: u64,
    /// How long artifacts of archived (or sunset deprecated) versions are kept; `None`: for
    /// ever, unless an admin collects them with a retention of their own.
    pub archived_artifact_retention: Option<std::time::Duration>,
    /// Uploads hold it shared while they place a blob and record it; a retention sweep holds
    /// it alone while it checks and deletes blobs.
    pub gc_lock: std::sync::Arc<tokio::sync::RwLock<()>>,
}

impl RegistryState {
    pub fn new(store: Store, artifact_root: impl Into<PathBuf>) -> Self {
        RegistryState {
            store,
            artifact_root: artifact_root.into(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            archived_artifact_retention: None,
            gc_lock: Default::default(),
        }
    }
}

/// The MLflow REST routes. Unknown routes under the prefixes answer 404 `ENDPOINT_NOT_FOUND`.
pub fn mlflow_router(state: RegistryState) -> Router {
    let api_routes = Router::new()
        .route("/api/2.0/mlflow/{*rest}", any(api::dispatch))
        .route("/api/3.0/mlflow/{*rest}", any(api::dispatch))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES));
    let artifact_routes = Router::new()
        .route("/api/2.0/mlflow-artifacts/artifacts", get(artifacts::list))
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            any(artifacts::object),
        )
        .layer(DefaultBodyLimit::disable());
    api_routes.merge(artifact_routes).with_state(state)
}
