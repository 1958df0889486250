//! Plinth's inference gateway data plane: an OpenAI-compatible proxy in front of model servers,
//! with weighted (and sticky) canary splits, automatic canary rollback, retries and fallbacks,
//! an exact-match response cache, per-team and per-key limits, usage records and metrics.
//!
//! The gateway does not touch the store: the server gives it deployments
//! ([`Gateway::set_deployments`]), an [`Authenticator`], a [`UsageSink`] and a
//! [`CanaryEvents`] callback. [`serve`] runs it alone on a listener.

pub mod auth;
pub mod cache;
pub mod canary;
pub mod demo;
pub mod error;
pub mod limits;
pub mod limits_redis;
pub mod metrics;
pub mod otlp;
mod proxy;
pub mod replicas;
mod serve;
pub mod spec;
pub mod tls;
mod upstream;
pub mod usage;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Uri};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::registry::Registry;

pub use auth::{Authenticator, Identity, StaticKeys};
pub use error::OpenAiError;
pub use metrics::GatewayMetrics;
pub use otlp::OtlpConfig;
pub use spec::{
    AutoscalingSpec, CacheSpec, CanaryPolicy, DeploymentSpec, DeploymentsFile, LimitScope,
    LimitSpec, LoadBalancing, PricingSpec, ReplicaResources, ReplicaSpec, SpecError, Stickiness,
    VersionRole, VersionSpec, parse_deployments_yaml, validate_deployments,
};
pub use usage::{
    CanaryEvents, ChannelSink, MemoryEvents, MemorySink, NullSink, RollbackEvent, UsageReceiver,
    UsageRecord, UsageSink,
};

/// The gateway's own port when none is configured.
pub const DEFAULT_PORT: u16 = 7879;

/// Limits of the gateway process itself.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Largest request body accepted (413 above). Default 4 MiB.
    pub max_body_bytes: usize,
    /// Largest non-streaming upstream response read (502 above). Default 64 MiB.
    pub max_response_bytes: usize,
    /// Idle keep-alive connections kept per upstream host. Default 1024.
    pub pool_max_idle_per_host: usize,
    /// How long an idle upstream connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// CA certificates (DER) trusted for `https://` upstreams besides the system's roots
    /// ([`tls::read_ca_file`]).
    pub upstream_ca_certs: Vec<Vec<u8>>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_body_bytes: 4 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Duration::from_secs(90),
            upstream_ca_certs: Vec::new(),
        }
    }
}

pub(crate) type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One version, ready to route to.
#[derive(Debug)]
pub(crate) struct Version {
    pub name: String,
    pub role: VersionRole,
    pub weight: u32,
    /// Base URLs without a trailing `/`.
    pub upstreams: Vec<String>,
    pub next: AtomicUsize,
    pub timeout: Duration,
    pub retries: u32,
    pub model: Option<String>,
    /// Local replicas (when the version has `replicas` instead of `upstreams`).
    pub replicas: Option<Arc<replicas::ReplicaPool>>,
}

/// One deployment with its live state (cache, limit windows, canary samples).
#[derive(Debug)]
pub(crate) struct Deployment {
    pub spec: DeploymentSpec,
    pub versions: Vec<Version>,
    pub cache: Option<cache::ResponseCache>,
    pub limiter: limits::Limiter,
    pub canary: Option<canary::CanaryMonitor>,
    pub sticky_header: Option<HeaderName>,
    /// Metric series of this deployment's requests, resolved once.
    pub metric_handles: metrics::HandleCache,
}

impl Deployment {
    fn new(
        spec: DeploymentSpec,
        pools: &replicas::ReplicaRegistry,
        limit_store: Option<Arc<dyn limits::LimitStore>>,
    ) -> Self {
        let versions = spec
            .versions
            .iter()
            .map(|v| Version {
                replicas: v.replicas.as_ref().map(|r| {
                    let p = pools.pool(&spec.name, &v.name);
                    p.configure(r.load_balancing, &v.autoscaling.clone().unwrap_or_default());
                    p
                }),
                name: v.name.clone(),
                role: v.role,
                weight: v.weight,
                upstreams: v
                    .upstreams
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .collect(),
                next: AtomicUsize::new(0),
                timeout: Duration::from_millis(v.timeout_ms),
                retries: v.retries,
                model: v.model.clone(),
            })
            .collect::<Vec<_>>();
        let canary = match (
            &spec.canary,
            versions.iter().find(|v| v.role == VersionRole::Canary),
        ) {
            (Some(p), Some(v)) => Some(canary::CanaryMonitor::new(&spec.name, &v.name, p.clone())),
            _ => None,
        };
        let sticky_header = match &spec.stickiness {
            Some(Stickiness::Header { name }) => HeaderName::from_bytes(name.as_bytes()).ok(),
            _ => None,
        };
        Deployment {
            cache: spec.cache.as_ref().map(|c| {
                cache::ResponseCache::new(Duration::from_secs(c.ttl_seconds), c.max_bytes)
            }),
            limiter: limits::Limiter::new(spec.limits.clone(), spec.pricing.clone())
                .with_store(&spec.name, limit_store),
            canary,
            sticky_header,
            metric_handles: metrics::HandleCache::default(),
            versions,
            spec,
        }
    }

    /// The weight traffic gets now: a rolled-back canary gets 0.
    pub fn effective_weight(&self, v: &Version) -> u32 {
        if v.role == VersionRole::Canary && self.canary.as_ref().is_some_and(|c| c.rolled_back()) {
            0
        } else {
            v.weight
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Config {
    pub deployments: Vec<Arc<Deployment>>,
    pub by_name: HashMap<String, usize>,
    pub by_model: HashMap<String, usize>,
}

impl Config {
    pub fn by_name(&self, name: &str) -> Option<&Arc<Deployment>> {
        self.by_name
            .get(name)
            .and_then(|&i| self.deployments.get(i))
    }
    pub fn by_model(&self, model: &str) -> Option<&Arc<Deployment>> {
        self.by_model
            .get(model)
            .and_then(|&i| self.deployments.get(i))
    }
}

pub(crate) struct Inner {
    pub config: RwLock<Arc<Config>>,
    pub auth: Arc<dyn Authenticator>,
    pub usage: Arc<dyn UsageSink>,
    pub events: Arc<dyn CanaryEvents>,
    pub limit_store: Option<Arc<dyn limits::LimitStore>>,
    pub otlp: Option<otlp::Exporter>,
    pub client: UpstreamClient,
    pub metrics: GatewayMetrics,
    pub registry: Registry,
    pub options: GatewayOptions,
    pub replicas: replicas::ReplicaRegistry,
}

/// A version's weights as routing sees them now.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatus {
    pub name: String,
    pub role: VersionRole,
    pub weight: u32,
    pub effective_weight: u32,
    /// Its local replicas, when it has `replicas`.
    pub replicas: Option<replicas::ReplicasView>,
}

/// A deployment as routing sees it now (for the console).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentStatus {
    pub name: String,
    pub models: Vec<String>,
    pub versions: Vec<VersionStatus>,
    pub canary_rolled_back: bool,
    pub cache_entries: usize,
    pub cache_bytes: u64,
}

/// A version with local replicas, for the controller that runs them.
#[derive(Debug, Clone)]
pub struct ReplicaTarget {
    pub deployment: String,
    pub version: String,
    /// The model name its usage is tagged with (the version's `model`, else the deployment's
    /// first model name).
    pub model: String,
    pub spec: ReplicaSpec,
    pub autoscaling: AutoscalingSpec,
    pub pool: Arc<replicas::ReplicaPool>,
}

/// The gateway. Cloning is cheap and shares all state.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    auth: Arc<dyn Authenticator>,
    usage: Arc<dyn UsageSink>,
    events: Arc<dyn CanaryEvents>,
    limit_store: Option<Arc<dyn limits::LimitStore>>,
    otlp: Option<OtlpConfig>,
    options: GatewayOptions,
}

impl GatewayBuilder {
    pub fn usage_sink(mut self, sink: Arc<dyn UsageSink>) -> Self {
        self.usage = sink;
        self
    }
    pub fn canary_events(mut self, events: Arc<dyn CanaryEvents>) -> Self {
        self.events = events;
        self
    }
    /// Shares limit windows with other gateways through `store` (see [`limits`]).
    pub fn limit_store(mut self, store: Arc<dyn limits::LimitStore>) -> Self {
        self.limit_store = Some(store);
        self
    }
    /// Exports one span per request over OTLP/HTTP (see [`otlp`]).
    pub fn otlp(mut self, config: Option<OtlpConfig>) -> Self {
        self.otlp = config;
        self
    }
    pub fn options(mut self, options: GatewayOptions) -> Self {
        self.options = options;
        self
    }

    pub fn build(self) -> Gateway {
        let client = build_client(&self.options);
        let metrics = GatewayMetrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let shared_limits = self.limit_store.is_some();
        let otlp = self
            .otlp
            .and_then(|c| otlp::start(c, build_client(&self.options)));
        let gateway = Gateway {
            inner: Arc::new(Inner {
                config: RwLock::new(Arc::new(Config::default())),
                auth: self.auth,
                usage: self.usage,
                events: self.events,
                limit_store: self.limit_store,
                otlp,
                client,
                metrics,
                registry,
                options: self.options,
                replicas: replicas::ReplicaRegistry::default(),
            }),
        };
        if shared_limits {
            limits::spawn_sync(Arc::downgrade(&gateway.inner));
        }
        gateway
    }
}

impl Gateway {
    /// A builder; usage records are dropped ([`NullSink`]) and rollback events kept in memory
    /// unless replaced.
    pub fn builder(auth: Arc<dyn Authenticator>) -> GatewayBuilder {
        GatewayBuilder {
            auth,
            usage: Arc::new(NullSink),
            events: Arc::new(MemoryEvents::new()),
            limit_store: None,
            otlp: None,
            options: GatewayOptions::default(),
        }
    }

    /// Validates and installs a new set of deployments; requests in flight finish on the old
    /// set. A deployment whose spec is unchanged keeps its cache, limit windows and canary state.
    pub fn set_deployments(&self, specs: Vec<DeploymentSpec>) -> Result<(), SpecError> {
        validate_deployments(&specs)?;
        let old = self.snapshot();
        let mut cfg = Config::default();
        for spec in specs {
            let dep = match old.by_name(&spec.name) {
                Some(d) if d.spec == spec => Arc::clone(d),
                _ => Arc::new(Deployment::new(
                    spec,
                    &self.inner.replicas,
                    self.inner.limit_store.clone(),
                )),
            };
            let i = cfg.deployments.len();
            cfg.by_name.insert(dep.spec.name.clone(), i);
            for m in &dep.spec.models {
                cfg.by_model.insert(m.clone(), i);
            }
            cfg.deployments.push(dep);
        }
        let keep = cfg
            .deployments
            .iter()
            .flat_map(|d| {
                d.versions
                    .iter()
                    .filter(|v| v.replicas.is_some())
                    .map(|v| (d.spec.name.clone(), v.name.clone()))
            })
            .collect();
        self.inner.replicas.retain(&keep);
        let new = Arc::new(cfg);
        match self.inner.config.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }

    pub(crate) fn snapshot(&self) -> Arc<Config> {
        match self.inner.config.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Deployments with their current effective weights.
    pub fn status(&self) -> Vec<DeploymentStatus> {
        self.snapshot()
            .deployments
            .iter()
            .map(|d| DeploymentStatus {
                name: d.spec.name.clone(),
                models: d.spec.models.clone(),
                versions: d
                    .versions
                    .iter()
                    .map(|v| VersionStatus {
                        name: v.name.clone(),
                        role: v.role,
                        weight: v.weight,
                        effective_weight: d.effective_weight(v),
                        replicas: v.replicas.as_ref().map(|p| p.view()),
                    })
                    .collect(),
                canary_rolled_back: d.canary.as_ref().is_some_and(|c| c.rolled_back()),
                cache_entries: d.cache.as_ref().map_or(0, |c| c.len()),
                cache_bytes: d.cache.as_ref().map_or(0, |c| c.bytes()),
            })
            .collect()
    }

    /// Every version served from local replicas now: what to run and the pool to fill (for the
    /// replica controller of `plinth serve`).
    pub fn replica_targets(&self) -> Vec<ReplicaTarget> {
        let cfg = self.snapshot();
        let mut out = Vec::new();
        for d in &cfg.deployments {
            for (v, vs) in d.versions.iter().zip(&d.spec.versions) {
                if let (Some(pool), Some(spec)) = (&v.replicas, &vs.replicas) {
                    out.push(ReplicaTarget {
                        deployment: d.spec.name.clone(),
                        version: v.name.clone(),
                        model: vs
                            .model
                            .clone()
                            .or_else(|| d.spec.models.first().cloned())
                            .unwrap_or_else(|| d.spec.name.clone()),
                        spec: spec.clone(),
                        autoscaling: vs.autoscaling.clone().unwrap_or_default(),
                        pool: Arc::clone(pool),
                    });
                }
            }
        }
        out
    }

    /// Notified whenever a request starts waiting for a replica (a cold start to begin).
    pub fn replica_demand(&self) -> Arc<tokio::sync::Notify> {
        self.inner.replicas.demand()
    }

    /// The metric families, to register in another registry (the server's).
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// Spans not exported (queue full, or the collector failed).
    pub fn spans_dropped(&self) -> u64 {
        self.inner
            .otlp
            .as_ref()
            .map_or(0, |e| e.dropped.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Requests and streams in progress.
    pub fn in_flight(&self) -> i64 {
        self.inner.metrics.in_flight.get()
    }

    /// The gateway's metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The gateway's routes: the OpenAI-compatible API, `predict`, and `GET /metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(proxy::chat))
            .route("/v1/completions", post(proxy::completions))
            .route("/v1/embeddings", post(proxy::embeddings))
            .route("/v1/models", get(proxy::models))
            .route("/v1/deployments/{name}/predict", post(proxy::predict))
            .route("/metrics", get(proxy::metrics))
            .fallback(proxy::not_found)
            .method_not_allowed_fallback(proxy::method_not_allowed)
            .with_state(self.clone())
    }
}

/// Serves the gateway alone on `listener` until `shutdown` resolves (`plinth gateway`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve::serve_listener(listener, gateway, shutdown).await;
    Ok(())
}

fn build_client(options: &GatewayOptions) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls::client_config(&options.upstream_ca_certs))
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(options.pool_max_idle_per_host)
        .pool_idle_timeout(options.pool_idle_timeout)
        .build(connector)
}

thread_local! {
    /// The upstream client of a [`serve_workers`] thread: its pooled connections live on that
    /// thread's runtime, so a request never crosses threads.
    static WORKER_CLIENT: std::cell::RefCell<Option<UpstreamClient>> =
        const { std::cell::RefCell::new(None) };
}

/// Sends `req` upstream: a plain `http://` request on this thread's own pool of connections
/// (with the connection to give back once the answer is read), an `https://` one with this
/// thread's worker client or the shared one.
pub(crate) async fn send_upstream(
    gateway: &Gateway,
    req: hyper::Request<Full<Bytes>>,
) -> Result<
    (
        hyper::Response<hyper::body::Incoming>,
        Option<upstream::Conn>,
    ),
    upstream::UpstreamError,
> {
    if req.uri().scheme() == Some(&axum::http::uri::Scheme::HTTP) {
        let o = &gateway.inner.options;
        return upstream::send(req, o.pool_max_idle_per_host, o.pool_idle_timeout)
            .await
            .map(|(r, c)| (r, Some(c)));
    }
    let sent = WORKER_CLIENT.with(|c| match &*c.borrow() {
        Some(client) => client.request(req),
        None => gateway.inner.client.request(req),
    });
    sent.await
        .map(|r| (r, None))
        .map_err(upstream::UpstreamError::from)
}

/// Serves the gateway on `addr` with `workers` threads, nginx-style: each thread runs its own
/// single-threaded runtime with its own listening socket (`SO_REUSEPORT`, the kernel spreads
/// connections) and its own upstream connection pool, so a request stays on one thread from
/// accept to answer. State (deployments, cache, limits, canary, metrics) is shared. Blocks until
/// every worker stopped (an error on one stops the process's serving there, and is returned).
pub fn serve_workers(
    addr: std::net::SocketAddr,
    gateway: Gateway,
    workers: usize,
    ready: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    let mut bound = Vec::new();
    let mut addr = addr;
    for _ in 0..workers.max(1) {
        let sock = reuseport_socket(addr)?;
        addr = sock.local_addr()?;
        bound.push(sock);
    }
    let (listening, wait) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let mut threads = Vec::new();
    for (i, sock) in bound.into_iter().enumerate() {
        let gw = gateway.clone();
        let options = gateway.inner.options.clone();
        let listening = listening.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("gateway-worker-{i}"))
                .spawn(move || -> std::io::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        WORKER_CLIENT.with(|c| *c.borrow_mut() = Some(build_client(&options)));
                        let listener = match sock.listen(1024) {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = listening
                                    .send(Err(std::io::Error::new(e.kind(), e.to_string())));
                                return Err(e);
                            }
                        };
                        let _ = listening.send(Ok(()));
                        serve::serve_listener(listener, gw, std::future::pending()).await;
                        Ok(())
                    })
                })?,
        );
    }
    drop(listening);
    for _ in 0..threads.len() {
        match wait.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::other(
                    "a gateway worker stopped while starting",
                ));
            }
        }
    }
    ready(addr);
    let mut result = Ok(());
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(std::io::Error::other("a gateway worker panicked")),
        }
    }
    result
}

/// A TCP socket bound to `addr` with `SO_REUSEPORT` (not yet listening).
fn reuseport_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    Ok(sock)
}

/// Parses `uri` joined from a base URL and a path.
pub(crate) fn join_uri(base: &str, path: &str) -> Option<Uri> {
    let mut s = String::with_capacity(base.len() + path.len());
    s.push_str(base);
    s.push_str(path);
    s.parse().ok()
}
