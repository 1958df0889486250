//! The HTTP face of Plinth: the JSON API under `/api/v1`, health and metrics endpoints, the
//! generated OpenAPI document and the server-rendered console, all on one port. Handlers are
//! thin: extract, call one `Platform` operation, map the error.

mod api;
mod auth;
mod console;
mod cost;
mod error;
mod gateway;
mod jobs;
mod lineage;
mod metrics;
mod model_gc;
mod models;
mod openapi;
mod replicas;
mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use plinth_config::{LogFormat, ServerConfig};
use plinth_core::Platform;
use plinth_store::Store;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiErrorResponse;
pub use gateway::redis_limit_store as gateway_redis_limit_store;
pub use gateway::serve_alone as serve_gateway_alone;
pub use openapi::openapi_json;

/// The attempt supervisor, run by `plinth exec-supervisor DIR` (a hidden subcommand, so the
/// product stays one binary).
pub use plinth_exec::supervisor::main as exec_supervisor_main;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
    pub metrics: Arc<metrics::Metrics>,
    pub max_body_bytes: usize,
    /// The largest dataset upload; uploads are streamed to disk, never held in memory.
    pub max_upload_bytes: u64,
    /// Where uploads are kept (`<data_dir>/uploads/`).
    pub data_dir: PathBuf,
    /// The job controller (scheduler plus local executor); `None` where jobs are not run.
    pub jobs: Option<Arc<jobs::Jobs>>,
    /// The MLflow-compatible tracking and registry routes; `None` where they are not served.
    pub registry: Option<plinth_registry::RegistryState>,
    /// The inference gateway (its own port); `None` where it is off.
    pub gateway: Option<Arc<gateway::ServerGateway>>,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    // Every route but the upload reads its body into memory, so the small limit applies to
    // them; the upload streams to disk and enforces `max_upload_bytes` itself.
    let limited = api::routes()
        .merge(jobs::api::routes())
        .merge(lineage::routes())
        .merge(models::routes())
        .merge(model_gc::routes())
        .merge(cost::routes())
        .merge(gateway::routes())
        .merge(console::routes())
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit));
    let mut app = Router::new()
        .merge(limited)
        .merge(upload::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(error::not_found)
        // Outside the body limit, so its 413 for a declared length becomes JSON as well.
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state.clone());
    if let Some(registry) = state.registry.clone() {
        // MLflow's routes answer in MLflow's error shape, so they sit outside json_errors; the
        // bearer token becomes the caller's identity here and the routes check the role.
        let mlflow = plinth_registry::mlflow_router(registry)
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::track,
            ))
            .layer(axum::middleware::from_fn_with_state(state, auth::identify));
        app = app.merge(mlflow);
    }
    app.layer(TraceLayer::new_for_http())
}

/// Installs the global log subscriber (stderr) in the requested format.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber_filter(level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn tracing_subscriber_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// What `serve` reports once it accepts connections.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: SocketAddr,
    /// The first admin token, only on the very first start and only if it was generated.
    pub admin_token: Option<String>,
    /// Where the inference gateway listens; `None` when it is off or its default port was taken.
    pub gateway_addr: Option<SocketAddr>,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("cannot open the store: {0}")]
    Store(#[from] plinth_store::StoreError),
    #[error("cannot bootstrap the admin token: {0}")]
    Bootstrap(#[from] plinth_core::CoreError),
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("inference gateway: {0}")]
    Gateway(String),
    #[error("cost: {0}")]
    Cost(String),
}

/// Opens the store, bootstraps the first token, listens, calls `on_start`, and serves until
/// SIGINT or SIGTERM, then drains in-flight requests.
pub async fn serve(
    config: ServerConfig,
    on_start: impl FnOnce(&Started),
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let store = Store::connect(&config.database_url).await?;
    let platform = Platform::new(store.clone());
    let admin_token = platform
        .bootstrap(config.bootstrap_token.as_deref())
        .await?;
    cost::configure_webhooks(config.cost_webhook_ca_file.as_deref()).map_err(ServeError::Cost)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let jobs = jobs::Jobs::new(
        platform.clone(),
        config.data_dir.join("exec"),
        Arc::clone(&metrics),
        jobs::Options::from_config(&config),
    )
    .map_err(|e| ServeError::DataDir {
        path: config.data_dir.join("exec").display().to_string(),
        message: e.to_string(),
    })?;
    jobs.spawn();
    let otlp = plinth_gateway::OtlpConfig::resolve(config.otlp_endpoint.as_deref(), |k| {
        config.otel_env.get(k).cloned()
    })
    .map_err(|e| ServeError::Gateway(format!("OTLP exporter: {e}")))?;
    let upstream_ca = match &config.gateway_upstream_ca_file {
        Some(p) => plinth_gateway::tls::read_ca_file(p)
            .map_err(|e| ServeError::Gateway(format!("upstream CA file {e}")))?,
        None => Vec::new(),
    };
    let limits = match (&config.gateway_listen, &config.gateway_limits_redis) {
        (Some(_), Some(url)) => Some(
            gateway::redis_limit_store(url.clone(), "--gateway-limits-redis")
                .await
                .map_err(ServeError::Gateway)?,
        ),
        _ => None,
    };
    let gateway = config.gateway_listen.map(|_| {
        gateway::ServerGateway::start(platform.clone(), &metrics, otlp, upstream_ca, limits)
    });
    let gateway_addr = match (config.gateway_listen, &gateway) {
        (Some(addr), Some(gateway)) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(gateway.serve(l, stop_requested())?),
            Err(e) if !config.gateway_listen_configured => {
                tracing::warn!(%addr, error = %e, "the inference gateway's default address is taken; serving without it (set --gateway-listen)");
                None
            }
            Err(e) => {
                return Err(ServeError::Bind {
                    addr,
                    message: format!("inference gateway: {e}"),
                });
            }
        },
        _ => None,
    };
    // Local replicas of the served deployments (only where the gateway serves).
    let replicas = match (&gateway, gateway_addr) {
        (Some(g), Some(_)) => Some(
            replicas::Replicas::start(
                store.clone(),
                Arc::clone(g),
                config.data_dir.join("replicas"),
                config.replica_usage_interval,
                Some(Arc::clone(&jobs)),
            )
            .map_err(|message| ServeError::DataDir {
                path: config.data_dir.join("replicas").display().to_string(),
                message,
            })?,
        ),
        _ => None,
    };
    let flush_on_stop = gateway.clone();
    let state = AppState {
        platform,
        metrics,
        max_body_bytes: config.max_body_bytes,
        max_upload_bytes: config.max_upload_bytes,
        data_dir: config.data_dir.clone(),
        jobs: Some(jobs),
        registry: Some(plinth_registry::RegistryState {
            store: store.clone(),
            artifact_root: config.data_dir.join("artifacts"),
            max_upload_bytes: config.max_upload_bytes,
            archived_artifact_retention: config.archived_artifact_retention,
            gc_lock: Default::default(),
        }),
        gateway,
    };
    models::spawn_retrainer(state.clone());
    if let (Some(registry), Some(retention)) =
        (state.registry.clone(), config.archived_artifact_retention)
    {
        plinth_registry::retention::spawn_sweeper(registry, retention, Duration::from_secs(3600));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = store.backend().as_str(), "plinth serving");
    on_start(&Started {
        addr,
        admin_token,
        gateway_addr,
    });
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal(grace))
        .await?;
    if let Some(r) = &replicas {
        r.shutdown(grace).await;
    }
    if let Some(g) = flush_on_stop {
        g.flush(grace).await;
    }
    store.close().await;
    tracing::info!("plinth stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM: the signal every long-running `plinth` command stops on.
pub async fn stop_requested() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn shutdown_signal(grace: Duration) {
    stop_requested().await;
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: draining requests"
    );
    // Force the exit if draining takes longer than the grace period.
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        tracing::warn!("grace period over; exiting");
        std::process::exit(0);
    });
}
