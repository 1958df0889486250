//! Gateway metrics, following the OpenTelemetry GenAI semantic conventions where they exist
//! (attribute names with `.` become `_` in Prometheus label names).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_operation_name: String,
    pub gen_ai_request_model: String,
    /// `input` or `output`.
    pub gen_ai_token_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub gen_ai_operation_name: String,
    pub gen_ai_request_model: String,
    pub deployment: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub deployment: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub deployment: String,
    /// `hit`, `miss` or `bypass`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub deployment: String,
    pub version: String,
    /// `starting`, `ready`, `draining` or `stopping`.
    pub state: String,
}

/// What one request that reached a deployment reports to the metrics.
#[derive(Debug)]
pub(crate) struct RequestSample<'a> {
    pub operation: &'static str,
    /// The model asked for (the deployment's name for `predict`).
    pub model: &'a str,
    pub deployment: &'a str,
    pub version: &'a str,
    pub status: u16,
    pub total_seconds: f64,
    /// Total minus upstream time (`None` for cache hits).
    pub overhead_seconds: Option<f64>,
    pub fallback: bool,
    /// Input and output tokens, when the upstream reported any.
    pub tokens: Option<(u64, u64)>,
}

/// The series one kind of request records into, resolved once: a request then records its
/// metrics without building label sets (no allocation, no hashing of strings).
#[derive(Debug)]
pub(crate) struct RequestHandles {
    requests: Counter,
    duration: Histogram,
    /// Input and output token histograms, created on first use (a series appears only once a
    /// request reported tokens).
    tokens: std::sync::OnceLock<(Histogram, Histogram)>,
}

/// Which [`RequestHandles`] a request uses, as small numbers: operation, index of the model in
/// the deployment's `models` (`u16::MAX` for `predict`), index of the version, HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct HandleKey {
    pub operation: u8,
    pub model: u16,
    pub version: u16,
    pub status: u16,
}

/// A deployment's resolved series, by [`HandleKey`].
#[derive(Debug, Default)]
pub(crate) struct HandleCache {
    map: std::sync::RwLock<std::collections::HashMap<HandleKey, RequestHandles>>,
}

/// More distinct keys than this per deployment are recorded without caching.
const MAX_CACHED_HANDLES: usize = 4096;

/// The gateway's metric families. Cloning shares the same series.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    pub token_usage: Family<TokenLabels, Histogram>,
    pub request_duration: Family<DurationLabels, Histogram>,
    pub overhead: Histogram,
    pub requests: Family<RequestLabels, Counter>,
    pub cache: Family<CacheLabels, Counter>,
    pub fallbacks: Family<DeploymentLabels, Counter>,
    pub rollbacks: Family<DeploymentLabels, Counter>,
    pub in_flight: Gauge,
    /// Local replicas by state (set by the replica controller of `plinth serve`).
    pub replicas: Family<ReplicaLabels, Gauge>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        GatewayMetrics {
            // Buckets from the OpenTelemetry GenAI conventions: 1, 4, 16, ... 4^13.
            token_usage: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 4.0, 14))
            }),
            request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 20))
            }),
            overhead: Histogram::new(exponential_buckets(0.000_016, 2.0, 18)),
            requests: Family::default(),
            cache: Family::default(),
            fallbacks: Family::default(),
            rollbacks: Family::default(),
            in_flight: Gauge::default(),
            replicas: Family::default(),
        }
    }

    /// Registers every family in `registry` (the server's, or the gateway's own).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per request as reported by the upstream's usage, by token type",
            self.token_usage.clone(),
        );
        registry.register(
            "gen_ai_server_request_duration_seconds",
            "Seconds from request arrival until the response was ready (headers, for streams)",
            self.request_duration.clone(),
        );
        registry.register(
            "plinth_gateway_overhead_seconds",
            "Seconds the gateway itself added: total request time minus time waiting on upstreams",
            self.overhead.clone(),
        );
        registry.register(
            "plinth_gateway_requests",
            "Requests answered by the gateway, by deployment and HTTP status",
            self.requests.clone(),
        );
        registry.register(
            "plinth_gateway_cache_lookups",
            "Response cache lookups by result (hit, miss, bypass)",
            self.cache.clone(),
        );
        registry.register(
            "plinth_gateway_fallbacks",
            "Requests answered by another version or deployment than the first choice",
            self.fallbacks.clone(),
        );
        registry.register(
            "plinth_gateway_canary_rollbacks",
            "Automatic canary rollbacks",
            self.rollbacks.clone(),
        );
        registry.register(
            "plinth_gateway_in_flight_requests",
            "Requests (and streams) in progress",
            self.in_flight.clone(),
        );
        registry.register(
            "plinth_gateway_replicas",
            "Local replicas of a deployment's version, by state (starting, ready, draining, stopping)",
            self.replicas.clone(),
        );
    }

    fn handles(&self, s: &RequestSample<'_>) -> RequestHandles {
        RequestHandles {
            requests: self
                .requests
                .get_or_create(&RequestLabels {
                    deployment: s.deployment.to_owned(),
                    status: s.status.to_string(),
                })
                .clone(),
            duration: self
                .request_duration
                .get_or_create(&DurationLabels {
                    gen_ai_operation_name: s.operation.to_owned(),
                    gen_ai_request_model: s.model.to_owned(),
                    deployment: s.deployment.to_owned(),
                    version: s.version.to_owned(),
                })
                .clone(),
            tokens: std::sync::OnceLock::new(),
        }
    }

    fn token_handles(&self, s: &RequestSample<'_>) -> (Histogram, Histogram) {
        let h = |kind: &str| {
            self.token_usage
                .get_or_create(&TokenLabels {
                    gen_ai_operation_name: s.operation.to_owned(),
                    gen_ai_request_model: s.model.to_owned(),
                    gen_ai_token_type: kind.to_owned(),
                })
                .clone()
        };
        (h("input"), h("output"))
    }

    /// Records one request that reached a deployment; with a cache and key, through the
    /// deployment's resolved series.
    pub(crate) fn record(&self, s: &RequestSample<'_>, cached: Option<(&HandleCache, HandleKey)>) {
        if let Some(o) = s.overhead_seconds {
            self.overhead.observe(o);
        }
        if s.fallback {
            self.fallbacks
                .get_or_create(&DeploymentLabels {
                    deployment: s.deployment.to_owned(),
                })
                .inc();
        }
        let apply = |h: &RequestHandles| {
            h.requests.inc();
            h.duration.observe(s.total_seconds);
            if let Some((i, o)) = s.tokens {
                let (hi, ho) = h.tokens.get_or_init(|| self.token_handles(s));
                hi.observe(i as f64);
                ho.observe(o as f64);
            }
        };
        let Some((cache, key)) = cached else {
            apply(&self.handles(s));
            return;
        };
        if let Ok(map) = cache.map.read()
            && let Some(h) = map.get(&key)
        {
            apply(h);
            return;
        }
        let h = self.handles(s);
        apply(&h);
        if let Ok(mut map) = cache.map.write()
            && map.len() < MAX_CACHED_HANDLES
        {
            map.entry(key).or_insert(h);
        }
    }
}
