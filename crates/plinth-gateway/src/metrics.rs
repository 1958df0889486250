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
    }
}
