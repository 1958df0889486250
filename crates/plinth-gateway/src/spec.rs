//! The `Deployment` resource: which model versions serve an OpenAI `model` name, how traffic is
//! split between them, where their upstreams are, and the cache, limits and canary policy.
//! Unknown fields are errors; [`validate_deployments`] names the field that is wrong.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether a version is the stable one or the canary being evaluated against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionRole {
    #[default]
    Stable,
    Canary,
}

/// One model version of a deployment and the upstream endpoints that serve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionSpec {
    /// Version name, unique within the deployment (e.g. `v1`).
    pub name: String,
    /// `stable` (default) or `canary`. At most one canary per deployment.
    #[serde(default)]
    pub role: VersionRole,
    /// Relative traffic weight (0–1,000,000). Weights of a deployment need not sum to 100.
    pub weight: u32,
    /// Base URLs of OpenAI-compatible servers (`http://host:port`, no `/v1`); the gateway
    /// appends the request path. Several URLs are used round-robin. Either this or `replicas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// Model servers Plinth starts itself as local processes (`plinth serve` only), instead of
    /// `upstreams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaSpec>,
    /// How many `replicas` run: min/max, target concurrency, scale to zero, the queue of
    /// requests waiting for a replica. Default: exactly one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Model name sent upstream in the `model` field; default: the name the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Per-attempt timeout in milliseconds: until the whole response for plain requests, until
    /// the headers and then between chunks for streams. Default 30,000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts on this version (next upstream, round-robin) before falling back.
    #[serde(default)]
    pub retries: u32,
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// How requests are spread over a version's ready replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// The replica with the fewest requests in progress (ties: round robin).
    #[default]
    LeastOutstanding,
    RoundRobin,
}

/// What one replica is given (metered like a job attempt: CPU- and GPU-seconds on its pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaResources {
    /// CPU cores requested (for cost; not enforced). Default 1.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Whole GPUs; the replica sees them in `CUDA_VISIBLE_DEVICES` (an empty value without).
    #[serde(default)]
    pub gpus: u32,
    /// Memory requested, GiB (for cost; not enforced).
    #[serde(default)]
    pub memory_gib: f64,
}

impl Default for ReplicaResources {
    fn default() -> Self {
        ReplicaResources {
            cpus: default_cpus(),
            gpus: 0,
            memory_gib: 0.0,
        }
    }
}

fn default_cpus() -> f64 {
    1.0
}

/// A model server Plinth runs as local processes through its executor: each replica is the
/// command in its own process group with its logs captured, on a free loopback port given as
/// `{port}` in the arguments and in the `portEnv` variable; it gets traffic once
/// `readinessPath` answers 2xx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSpec {
    /// Program and arguments; every `{port}` is replaced by the replica's port.
    pub command: Vec<String>,
    /// Environment variable that carries the port. Default `PORT`.
    #[serde(default = "default_port_env")]
    pub port_env: String,
    /// Path answered with 2xx once the server is ready (polled while it starts, then every
    /// 2 s). Default `/health`.
    #[serde(default = "default_readiness_path")]
    pub readiness_path: String,
    /// Pool the replicas run in, and whose prices meter their time. Default `local`. Where
    /// the server's job scheduler runs this pool, each replica is admitted by it like a job
    /// of class `inference` (quota, placement of its GPUs, preemption).
    #[serde(default = "default_replica_pool")]
    pub pool: String,
    /// Queue whose quota admits the replicas. Default: the first of the deployment team's
    /// queues (by name) that admits them, where `pool` is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default)]
    pub resources: ReplicaResources,
    /// Extra environment variables (not `PLINTH_*` or `CUDA_VISIBLE_DEVICES`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// A replica not ready this long after it started is stopped and replaced. Default 120.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_seconds: u64,
    /// `least_outstanding` (default) or `round_robin`.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
}

fn default_port_env() -> String {
    "PORT".to_owned()
}

fn default_readiness_path() -> String {
    "/health".to_owned()
}

fn default_replica_pool() -> String {
    "local".to_owned()
}

fn default_start_timeout() -> u64 {
    120
}

/// How many replicas of a version run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalingSpec {
    /// Replicas kept running (0: scale to zero after `scaleToZeroAfterSeconds` without
    /// requests). Default 1.
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    /// Most replicas. Default: `minReplicas` (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// Requests in progress (and waiting) per replica above which another one is started.
    /// Default 4.
    #[serde(default = "default_target_concurrency")]
    pub target_concurrency: f64,
    /// Load must stay below what fewer replicas can carry this long before one is stopped.
    /// Default 30.
    #[serde(default = "default_scale_down_after")]
    pub scale_down_after_seconds: u64,
    /// With `minReplicas: 0`: seconds without any request after which every replica stops.
    /// Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_after_seconds: Option<u64>,
    /// Requests that may wait while no replica is ready (a cold start); more get 503.
    /// Default 100.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: u32,
    /// How long a request waits for a ready replica before it gets 503. Default 60.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_seconds: u64,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        AutoscalingSpec {
            min_replicas: default_min_replicas(),
            max_replicas: None,
            target_concurrency: default_target_concurrency(),
            scale_down_after_seconds: default_scale_down_after(),
            scale_to_zero_after_seconds: None,
            queue_limit: default_queue_limit(),
            queue_timeout_seconds: default_queue_timeout(),
        }
    }
}

impl AutoscalingSpec {
    /// `maxReplicas`, or its default.
    pub fn max(&self) -> u32 {
        self.max_replicas.unwrap_or(self.min_replicas.max(1))
    }
    /// Idle seconds before scaling to zero (only with `minReplicas: 0`).
    pub fn scale_to_zero_after(&self) -> Option<u64> {
        (self.min_replicas == 0).then(|| self.scale_to_zero_after_seconds.unwrap_or(300))
    }
}

fn default_min_replicas() -> u32 {
    1
}
fn default_target_concurrency() -> f64 {
    4.0
}
fn default_scale_down_after() -> u64 {
    30
}
fn default_queue_limit() -> u32 {
    100
}
fn default_queue_timeout() -> u64 {
    60
}

/// The most replicas one version may have.
pub const MAX_REPLICAS: u32 = 256;

fn valid_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn reserved_env(s: &str) -> bool {
    s.starts_with("PLINTH_") || s == "CUDA_VISIBLE_DEVICES"
}

fn check_replicas(vat: &str, r: &ReplicaSpec) -> Result<(), SpecError> {
    let at = format!("{vat}.replicas");
    if r.command.first().is_none_or(|c| c.trim().is_empty()) {
        return Err(SpecError::new(
            format!("{at}.command"),
            "needs a program to run (e.g. [\"vllm\", \"serve\", \"--port\", \"{port}\"])",
        ));
    }
    if !valid_env_name(&r.port_env) || reserved_env(&r.port_env) {
        return Err(SpecError::new(
            format!("{at}.portEnv"),
            format!(
                "`{}` must be a variable name of letters, digits and '_' (not PLINTH_* or CUDA_VISIBLE_DEVICES)",
                r.port_env
            ),
        ));
    }
    if !r.readiness_path.starts_with('/') {
        return Err(SpecError::new(
            format!("{at}.readinessPath"),
            format!("`{}` must start with '/'", r.readiness_path),
        ));
    }
    if !valid_name(&r.pool) {
        return Err(SpecError::new(
            format!("{at}.pool"),
            format!("`{}` is not a pool name", r.pool),
        ));
    }
    let res = &r.resources;
    if !(res.cpus.is_finite() && res.cpus > 0.0 && res.cpus <= 4096.0) {
        return Err(SpecError::new(
            format!("{at}.resources.cpus"),
            format!("{} must be a number above 0 and at most 4096", res.cpus),
        ));
    }
    if res.gpus > 64 {
        return Err(SpecError::new(
            format!("{at}.resources.gpus"),
            format!("{} is above the maximum 64", res.gpus),
        ));
    }
    if !(res.memory_gib.is_finite() && res.memory_gib >= 0.0) {
        return Err(SpecError::new(
            format!("{at}.resources.memoryGib"),
            format!("{} must be a number of at least 0", res.memory_gib),
        ));
    }
    for k in r.env.keys() {
        if !valid_env_name(k) {
            return Err(SpecError::new(
                format!("{at}.env.{k}"),
                "is not a variable name (letters, digits and '_', not starting with a digit)",
            ));
        }
        if reserved_env(k) || k == &r.port_env {
            return Err(SpecError::new(
                format!("{at}.env.{k}"),
                "is set by Plinth (PLINTH_*, CUDA_VISIBLE_DEVICES and the port variable)",
            ));
        }
    }
    if r.start_timeout_seconds == 0 || r.start_timeout_seconds > 3600 {
        return Err(SpecError::new(
            format!("{at}.startTimeoutSeconds"),
            format!("{} must be between 1 and 3600", r.start_timeout_seconds),
        ));
    }
    Ok(())
}

fn check_autoscaling(vat: &str, a: &AutoscalingSpec) -> Result<(), SpecError> {
    let at = format!("{vat}.autoscaling");
    if a.min_replicas > MAX_REPLICAS {
        return Err(SpecError::new(
            format!("{at}.minReplicas"),
            format!("{} is above the maximum {MAX_REPLICAS}", a.min_replicas),
        ));
    }
    if let Some(m) = a.max_replicas {
        if m == 0 || m > MAX_REPLICAS {
            return Err(SpecError::new(
                format!("{at}.maxReplicas"),
                format!("{m} must be between 1 and {MAX_REPLICAS}"),
            ));
        }
        if m < a.min_replicas {
            return Err(SpecError::new(
                format!("{at}.maxReplicas"),
                format!("{m} is below minReplicas {}", a.min_replicas),
            ));
        }
    }
    if !(a.target_concurrency.is_finite() && a.target_concurrency > 0.0) {
        return Err(SpecError::new(
            format!("{at}.targetConcurrency"),
            format!("{} must be a number above 0", a.target_concurrency),
        ));
    }
    if a.scale_down_after_seconds == 0 || a.scale_down_after_seconds > 86_400 {
        return Err(SpecError::new(
            format!("{at}.scaleDownAfterSeconds"),
            format!("{} must be between 1 and 86400", a.scale_down_after_seconds),
        ));
    }
    if let Some(s) = a.scale_to_zero_after_seconds {
        if a.min_replicas > 0 {
            return Err(SpecError::new(
                format!("{at}.scaleToZeroAfterSeconds"),
                "needs minReplicas: 0",
            ));
        }
        if s == 0 || s > 604_800 {
            return Err(SpecError::new(
                format!("{at}.scaleToZeroAfterSeconds"),
                format!("{s} must be between 1 and 604800"),
            ));
        }
    }
    if a.queue_limit > 100_000 {
        return Err(SpecError::new(
            format!("{at}.queueLimit"),
            format!("{} is above the maximum 100000", a.queue_limit),
        ));
    }
    if a.queue_timeout_seconds == 0 || a.queue_timeout_seconds > 3600 {
        return Err(SpecError::new(
            format!("{at}.queueTimeoutSeconds"),
            format!("{} must be between 1 and 3600", a.queue_timeout_seconds),
        ));
    }
    Ok(())
}

/// Where the key for sticky routing comes from. Requests without the key are split at random.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", tag = "from", deny_unknown_fields)]
pub enum Stickiness {
    /// A request header, e.g. `x-session-id`.
    Header { name: String },
    /// The OpenAI `user` field of the request body.
    User,
}

/// Exact-match response cache for non-streaming requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheSpec {
    /// Seconds an entry is served (at least 1).
    pub ttl_seconds: u64,
    /// Bytes of keys and bodies kept; the oldest entries are evicted first (at least 1).
    pub max_bytes: u64,
}

/// Who a limit counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Every key of the caller's team together.
    Team,
    /// Each API key on its own.
    Key,
}

/// What a deployment's tokens cost, for spend limits and the cost per request in usage records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingSpec {
    /// Price of 1,000 input (prompt) tokens.
    pub input_per_1k_tokens: f64,
    /// Price of 1,000 output (completion) tokens.
    pub output_per_1k_tokens: f64,
    /// ISO 4217 code of the prices (default USD).
    #[serde(default = "default_currency")]
    pub currency: String,
}

fn default_currency() -> String {
    "USD".to_owned()
}

impl PricingSpec {
    /// What `tokens_in` input and `tokens_out` output tokens cost.
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.input_per_1k_tokens
            + tokens_out as f64 * self.output_per_1k_tokens)
            / 1000.0
    }
}

/// A fixed-window limit on requests, tokens and/or spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitSpec {
    pub scope: LimitScope,
    /// Window length in seconds (at least 1).
    pub window_seconds: u64,
    /// Requests admitted per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Tokens (in + out, as reported by the upstream) per window; a request is refused once the
    /// window's tokens reached the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Spend per window in the deployment's `pricing` currency (tokens reported by the upstream
    /// at its prices); a request is refused once the window's spend reached the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<f64>,
}

/// When the canary is rolled back automatically (its weight becomes 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryPolicy {
    /// Sliding window, seconds, over which both versions are compared.
    pub window_seconds: u64,
    /// Requests the canary must have seen in the window before it can be judged.
    pub min_requests: u64,
    /// Roll back when canary error rate − stable error rate exceeds this (0.0–1.0).
    pub max_error_rate_margin: f64,
    /// Roll back when canary p95 latency − stable p95 latency exceeds this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p95_latency_margin_ms: Option<f64>,
}

/// A deployment: OpenAI model names it serves, its versions and policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Unique name; `POST /v1/deployments/{name}/predict` addresses it.
    pub name: String,
    /// Values of the OpenAI `model` field routed to this deployment (unique across deployments).
    #[serde(default)]
    pub models: Vec<String>,
    pub versions: Vec<VersionSpec>,
    /// Sticky split: the same key always goes to the same version (while weights are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<Stickiness>,
    /// Deployments tried in order when every version of this one failed (5xx, timeout,
    /// connection error). Fallbacks are not chained further.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    #[serde(default)]
    pub limits: Vec<LimitSpec>,
    /// Token prices: spend limits count with them, usage records carry each request's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPolicy>,
    /// Upstream path for `predict` requests (plain JSON model servers). Default `/predict`.
    #[serde(default = "default_predict_path")]
    pub predict_path: String,
}

fn default_predict_path() -> String {
    "/predict".to_owned()
}

/// A file of deployments, as read by [`parse_deployments_yaml`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentsFile {
    pub deployments: Vec<DeploymentSpec>,
}

/// A deployment spec that is not valid; `field` is a path such as `deployments[0].versions[1].weight`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

const MAX_WEIGHT: u32 = 1_000_000;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_upstream(field: &str, url: &str) -> Result<(), SpecError> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| SpecError::new(field, format!("`{url}` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(SpecError::new(
                field,
                format!("`{url}` must start with http:// or https://"),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(SpecError::new(field, format!("`{url}` has no host")));
    }
    if uri.query().is_some() {
        return Err(SpecError::new(
            field,
            format!("`{url}` must not have a query"),
        ));
    }
    Ok(())
}

impl DeploymentSpec {
    /// Checks this deployment on its own; `at` prefixes the field paths in errors.
    pub fn validate(&self, at: &str) -> Result<(), SpecError> {
        if !valid_name(&self.name) {
            return Err(SpecError::new(
                format!("{at}.name"),
                format!(
                    "`{}` must be 1-128 characters of letters, digits, '-', '_' or '.'",
                    self.name
                ),
            ));
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.trim().is_empty() {
                return Err(SpecError::new(
                    format!("{at}.models[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if self.versions.is_empty() {
            return Err(SpecError::new(
                format!("{at}.versions"),
                "needs at least one version",
            ));
        }
        let mut canaries = 0;
        let mut stable_weight = 0u64;
        for (i, v) in self.versions.iter().enumerate() {
            let vat = format!("{at}.versions[{i}]");
            if !valid_name(&v.name) {
                return Err(SpecError::new(
                    format!("{vat}.name"),
                    format!(
                        "`{}` must be 1-128 characters of letters, digits, '-', '_' or '.'",
                        v.name
                    ),
                ));
            }
            if self.versions[..i].iter().any(|o| o.name == v.name) {
                return Err(SpecError::new(
                    format!("{vat}.name"),
                    format!("version `{}` appears twice", v.name),
                ));
            }
            if v.weight > MAX_WEIGHT {
                return Err(SpecError::new(
                    format!("{vat}.weight"),
                    format!("{} is above the maximum {MAX_WEIGHT}", v.weight),
                ));
            }
            match (&v.replicas, v.upstreams.is_empty()) {
                (None, true) => {
                    return Err(SpecError::new(
                        format!("{vat}.upstreams"),
                        "needs at least one upstream URL (or `replicas`)",
                    ));
                }
                (Some(_), false) => {
                    return Err(SpecError::new(
                        format!("{vat}.replicas"),
                        "give either `upstreams` or `replicas`, not both",
                    ));
                }
                (Some(r), true) => check_replicas(&vat, r)?,
                (None, false) => {}
            }
            match (&v.autoscaling, &v.replicas) {
                (Some(_), None) => {
                    return Err(SpecError::new(
                        format!("{vat}.autoscaling"),
                        "autoscaling needs `replicas` (Plinth scales only what it starts)",
                    ));
                }
                (Some(a), Some(_)) => check_autoscaling(&vat, a)?,
                _ => {}
            }
            for (j, u) in v.upstreams.iter().enumerate() {
                check_upstream(&format!("{vat}.upstreams[{j}]"), u)?;
            }
            if v.timeout_ms == 0 || v.timeout_ms > 3_600_000 {
                return Err(SpecError::new(
                    format!("{vat}.timeoutMs"),
                    format!("{} must be between 1 and 3600000", v.timeout_ms),
                ));
            }
            if v.retries > 10 {
                return Err(SpecError::new(
                    format!("{vat}.retries"),
                    format!("{} is above the maximum 10", v.retries),
                ));
            }
            match v.role {
                VersionRole::Canary => canaries += 1,
                VersionRole::Stable => stable_weight += u64::from(v.weight),
            }
        }
        if canaries > 1 {
            return Err(SpecError::new(
                format!("{at}.versions"),
                "at most one version may have role `canary`",
            ));
        }
        if stable_weight == 0 {
            return Err(SpecError::new(
                format!("{at}.versions"),
                "needs a `stable` version with a weight above 0",
            ));
        }
        if let Some(Stickiness::Header { name }) = &self.stickiness
            && axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(SpecError::new(
                format!("{at}.stickiness.name"),
                format!("`{name}` is not a valid header name"),
            ));
        }
        if let Some(c) = &self.cache {
            if c.ttl_seconds == 0 {
                return Err(SpecError::new(
                    format!("{at}.cache.ttlSeconds"),
                    "must be at least 1",
                ));
            }
            if c.max_bytes == 0 {
                return Err(SpecError::new(
                    format!("{at}.cache.maxBytes"),
                    "must be at least 1",
                ));
            }
        }
        for (i, l) in self.limits.iter().enumerate() {
            let lat = format!("{at}.limits[{i}]");
            if l.window_seconds == 0 {
                return Err(SpecError::new(
                    format!("{lat}.windowSeconds"),
                    "must be at least 1",
                ));
            }
            if l.requests.is_none() && l.tokens.is_none() && l.spend.is_none() {
                return Err(SpecError::new(
                    lat,
                    "needs `requests`, `tokens` and/or `spend`",
                ));
            }
            if let Some(s) = l.spend {
                if !(s.is_finite() && s > 0.0) {
                    return Err(SpecError::new(
                        format!("{lat}.spend"),
                        format!("{s} must be a number above 0"),
                    ));
                }
                if self.pricing.is_none() {
                    return Err(SpecError::new(
                        format!("{lat}.spend"),
                        "a spend limit needs the deployment's `pricing`",
                    ));
                }
            }
        }
        if let Some(p) = &self.pricing {
            for (name, v) in [
                ("inputPer1kTokens", p.input_per_1k_tokens),
                ("outputPer1kTokens", p.output_per_1k_tokens),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(SpecError::new(
                        format!("{at}.pricing.{name}"),
                        format!("{v} must be a number of at least 0"),
                    ));
                }
            }
            if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(SpecError::new(
                    format!("{at}.pricing.currency"),
                    format!("`{}` is not an ISO 4217 code such as USD", p.currency),
                ));
            }
        }
        if let Some(p) = &self.canary {
            if canaries == 0 {
                return Err(SpecError::new(
                    format!("{at}.canary"),
                    "a canary policy needs a version with role `canary`",
                ));
            }
            if p.window_seconds == 0 {
                return Err(SpecError::new(
                    format!("{at}.canary.windowSeconds"),
                    "must be at least 1",
                ));
            }
            if p.min_requests == 0 {
                return Err(SpecError::new(
                    format!("{at}.canary.minRequests"),
                    "must be at least 1",
                ));
            }
            if !(0.0..=1.0).contains(&p.max_error_rate_margin) {
                return Err(SpecError::new(
                    format!("{at}.canary.maxErrorRateMargin"),
                    format!("{} must be between 0.0 and 1.0", p.max_error_rate_margin),
                ));
            }
            if let Some(ms) = p.max_p95_latency_margin_ms
                && !(ms.is_finite() && ms >= 0.0)
            {
                return Err(SpecError::new(
                    format!("{at}.canary.maxP95LatencyMarginMs"),
                    format!("{ms} must be a non-negative number"),
                ));
            }
        }
        if !self.predict_path.starts_with('/') {
            return Err(SpecError::new(
                format!("{at}.predictPath"),
                format!("`{}` must start with '/'", self.predict_path),
            ));
        }
        Ok(())
    }
}

/// Checks every deployment and the references between them: unique names, unique model names,
/// fallbacks that name another existing deployment.
pub fn validate_deployments(deployments: &[DeploymentSpec]) -> Result<(), SpecError> {
    for (i, d) in deployments.iter().enumerate() {
        let at = format!("deployments[{i}]");
        d.validate(&at)?;
        if deployments[..i].iter().any(|o| o.name == d.name) {
            return Err(SpecError::new(
                format!("{at}.name"),
                format!("deployment `{}` appears twice", d.name),
            ));
        }
        for (j, m) in d.models.iter().enumerate() {
            if let Some(o) = deployments[..i].iter().find(|o| o.models.contains(m)) {
                return Err(SpecError::new(
                    format!("{at}.models[{j}]"),
                    format!("model `{m}` is already served by deployment `{}`", o.name),
                ));
            }
            if d.models[..j].contains(m) {
                return Err(SpecError::new(
                    format!("{at}.models[{j}]"),
                    format!("model `{m}` appears twice"),
                ));
            }
        }
        for (j, f) in d.fallbacks.iter().enumerate() {
            if f == &d.name {
                return Err(SpecError::new(
                    format!("{at}.fallbacks[{j}]"),
                    "a deployment cannot fall back to itself",
                ));
            }
            if !deployments.iter().any(|o| &o.name == f) {
                return Err(SpecError::new(
                    format!("{at}.fallbacks[{j}]"),
                    format!("no deployment named `{f}`"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses and validates a YAML file of the form `deployments: [...]`. Errors name the field.
pub fn parse_deployments_yaml(text: &str) -> Result<Vec<DeploymentSpec>, SpecError> {
    let de = yaml_serde::Deserializer::from_str(text);
    let file: DeploymentsFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        SpecError::new(
            if path == "." {
                "deployments".to_owned()
            } else {
                path
            },
            e.inner().to_string(),
        )
    })?;
    validate_deployments(&file.deployments)?;
    Ok(file.deployments)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
deployments:
  - name: chat
    models: [gpt-4o-mini]
    versions:
      - name: v1
        weight: 90
        upstreams: ["http://127.0.0.1:9000"]
      - name: v2
        role: canary
        weight: 10
        upstreams: ["http://127.0.0.1:9001"]
        timeoutMs: 500
        retries: 1
    stickiness: { from: header, name: x-session-id }
    fallbacks: [backup]
    cache: { ttlSeconds: 60, maxBytes: 1000000 }
    limits:
      - { scope: team, windowSeconds: 60, requests: 100 }
    canary: { windowSeconds: 60, minRequests: 20, maxErrorRateMargin: 0.05 }
  - name: backup
    models: [backup-model]
    versions:
      - { name: v1, weight: 1, upstreams: ["http://127.0.0.1:9002"] }
"#;

    #[test]
    fn parses_a_full_file() {
        let d = parse_deployments_yaml(GOOD).expect("valid file");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].versions[1].role, VersionRole::Canary);
        assert_eq!(d[0].versions[1].timeout_ms, 500);
        assert_eq!(d[0].versions[0].timeout_ms, 30_000);
        assert_eq!(
            d[0].stickiness,
            Some(Stickiness::Header {
                name: "x-session-id".into()
            })
        );
        assert_eq!(d[0].predict_path, "/predict");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("weight: 90", "weight: 9000000"),
                "deployments[0].versions[0].weight",
            ),
            (
                GOOD.replace("fallbacks: [backup]", "fallbacks: [nope]"),
                "deployments[0].fallbacks[0]",
            ),
            (
                GOOD.replace("models: [backup-model]", "models: [gpt-4o-mini]"),
                "deployments[1].models[0]",
            ),
            (
                GOOD.replace("\"http://127.0.0.1:9001\"", "\"ftp://x\""),
                "deployments[0].versions[1].upstreams[0]",
            ),
            (
                GOOD.replace("ttlSeconds: 60", "ttlSeconds: 0"),
                "deployments[0].cache.ttlSeconds",
            ),
            (
                GOOD.replace("maxErrorRateMargin: 0.05", "maxErrorRateMargin: 2"),
                "deployments[0].canary.maxErrorRateMargin",
            ),
            (
                GOOD.replace("role: canary", "role: canary\n        colour: red"),
                "deployments[0].versions[1]",
            ),
        ];
        for (text, field) in cases {
            let e = parse_deployments_yaml(&text).expect_err(field);
            assert!(
                e.field.starts_with(field),
                "expected field {field}, got {e}"
            );
        }
    }

    const REPLICAS: &str = r#"
deployments:
  - name: chat
    models: [m]
    versions:
      - name: v1
        weight: 1
        replicas:
          command: [plinth, demo-model-server, --listen, "127.0.0.1:{port}"]
          resources: {cpus: 2, gpus: 1}
          env: {HF_HOME: /cache}
        autoscaling: {minReplicas: 0, maxReplicas: 3, targetConcurrency: 2, scaleToZeroAfterSeconds: 60}
"#;

    #[test]
    fn replica_versions_parse_with_defaults() {
        let d = parse_deployments_yaml(REPLICAS).expect("valid");
        let v = &d[0].versions[0];
        assert!(v.upstreams.is_empty());
        let r = v.replicas.as_ref().expect("replicas");
        assert_eq!(r.port_env, "PORT");
        assert_eq!(r.readiness_path, "/health");
        assert_eq!(r.pool, "local");
        assert_eq!(r.resources.gpus, 1);
        assert_eq!(r.load_balancing, LoadBalancing::LeastOutstanding);
        let a = v.autoscaling.as_ref().expect("autoscaling");
        assert_eq!((a.min_replicas, a.max()), (0, 3));
        assert_eq!(a.scale_to_zero_after(), Some(60));
        assert_eq!(a.queue_limit, 100);
        let plain = AutoscalingSpec::default();
        assert_eq!((plain.min_replicas, plain.max()), (1, 1));
        assert_eq!(plain.scale_to_zero_after(), None, "only with minReplicas 0");
    }

    #[test]
    fn replica_errors_name_the_field() {
        let at = "deployments[0].versions[0]";
        let cases = [
            (
                REPLICAS.replace(
                    "command: [plinth, demo-model-server, --listen, \"127.0.0.1:{port}\"]",
                    "command: []",
                ),
                format!("{at}.replicas.command"),
            ),
            (
                REPLICAS.replace(
                    "        replicas:",
                    "        upstreams: [\"http://127.0.0.1:1\"]\n        replicas:",
                ),
                format!("{at}.replicas"),
            ),
            (
                REPLICAS.replace("HF_HOME", "PLINTH_X"),
                format!("{at}.replicas.env.PLINTH_X"),
            ),
            (
                REPLICAS.replace("cpus: 2", "cpus: 0"),
                format!("{at}.replicas.resources.cpus"),
            ),
            (
                REPLICAS.replace("maxReplicas: 3", "maxReplicas: 0"),
                format!("{at}.autoscaling.maxReplicas"),
            ),
            (
                REPLICAS.replace("minReplicas: 0", "minReplicas: 4"),
                format!("{at}.autoscaling.maxReplicas"),
            ),
            (
                REPLICAS.replace("minReplicas: 0", "minReplicas: 1"),
                format!("{at}.autoscaling.scaleToZeroAfterSeconds"),
            ),
            (
                REPLICAS.replace("targetConcurrency: 2", "targetConcurrency: -1"),
                format!("{at}.autoscaling.targetConcurrency"),
            ),
            (
                REPLICAS.replace(
                    "        replicas:",
                    "        replicas:\n          readinessPath: health",
                ),
                format!("{at}.replicas.readinessPath"),
            ),
            (
                REPLICAS.replace("{cpus: 2, gpus: 1}", "{cpus: 2, gpus: 1, tpus: 3}"),
                format!("{at}.replicas.resources"),
            ),
        ];
        for (text, field) in cases {
            let e = parse_deployments_yaml(&text).expect_err(&field);
            assert!(
                e.field.starts_with(&field),
                "expected field {field}, got {e}"
            );
        }
        // Autoscaling only scales replicas Plinth starts.
        let text = GOOD.replace(
            "        timeoutMs: 500",
            "        timeoutMs: 500\n        autoscaling: {minReplicas: 1}",
        );
        let e = parse_deployments_yaml(&text).expect_err("autoscaling without replicas");
        assert_eq!(e.field, "deployments[0].versions[1].autoscaling");
    }

    #[test]
    fn a_deployment_needs_stable_weight() {
        let text = GOOD.replace("weight: 90", "weight: 0");
        let e = parse_deployments_yaml(&text).expect_err("no stable weight");
        assert_eq!(e.field, "deployments[0].versions");
    }
}
