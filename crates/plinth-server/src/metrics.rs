//! Prometheus metrics: request counts and latencies per route, plus store gauges read at scrape.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::Request;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContractLabels {
    contract: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContractStatusLabels {
    contract: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

/// Metrics the job controller updates.
pub struct JobMetrics {
    pub pending: Family<QueueLabel, Gauge>,
    pub admissions: Counter,
    pub preemptions: Counter,
    pub time_to_admission: Histogram,
    pub gpus_allocated: Family<PoolLabel, Gauge<f64, AtomicU64>>,
}

impl JobMetrics {
    fn register(registry: &mut Registry) -> Self {
        let pending = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "queue_pending_jobs",
            "Jobs waiting in each queue",
            pending.clone(),
        );
        let admissions = Counter::default();
        registry.register(
            "admissions",
            "Jobs admitted by the scheduler",
            admissions.clone(),
        );
        let preemptions = Counter::default();
        registry.register(
            "preemptions",
            "Running jobs preempted by the scheduler",
            preemptions.clone(),
        );
        let time_to_admission = Histogram::new(exponential_buckets(0.1, 2.0, 16));
        registry.register(
            "time_to_admission_seconds",
            "Seconds from submit to admission",
            time_to_admission.clone(),
        );
        let gpus_allocated = Family::<PoolLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pool_gpus_allocated",
            "Accelerators allocated to admitted jobs, per pool",
            gpus_allocated.clone(),
        );
        JobMetrics {
            pending,
            admissions,
            preemptions,
            time_to_admission,
            gpus_allocated,
        }
    }
}

pub struct Metrics {
    pub jobs: JobMetrics,
    pub cost: crate::cost::CostMetrics,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    objects: Family<KindLabels, Gauge>,
    audit_events: Gauge,
    build: Family<BuildLabels, Gauge>,
    freshness_lag: Family<ContractLabels, Gauge<f64, AtomicU64>>,
    dataset_checks: Family<ContractStatusLabels, Gauge>,
    /// The inference gateway, whose metric families are served on this `/metrics` too.
    gateway: std::sync::OnceLock<plinth_gateway::Gateway>,
}

impl Metrics {
    /// Serves `gateway`'s metrics (OpenTelemetry GenAI names, unprefixed) with the server's.
    pub fn attach_gateway(&self, gateway: plinth_gateway::Gateway) {
        let _ = self.gateway.set(gateway);
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plinth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency in seconds",
            latency.clone(),
        );
        let objects = Family::<KindLabels, Gauge>::default();
        registry.register(
            "resources",
            "Stored declarative resources by kind",
            objects.clone(),
        );
        let audit_events = Gauge::default();
        registry.register(
            "audit_events",
            "Events in the audit log",
            audit_events.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Version and store backend of this server (always 1)",
            build.clone(),
        );
        let freshness_lag = Family::<ContractLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dataset_freshness_lag_seconds",
            "Seconds between now and the newest freshness value of each contract's latest dataset version",
            freshness_lag.clone(),
        );
        let dataset_checks = Family::<ContractStatusLabels, Gauge>::default();
        registry.register(
            "dataset_checks",
            "Checks of each contract's latest dataset version, by status",
            dataset_checks.clone(),
        );
        let jobs = JobMetrics::register(&mut registry);
        let cost = crate::cost::CostMetrics::register(&mut registry);
        Metrics {
            jobs,
            cost,
            registry,
            freshness_lag,
            dataset_checks,
            requests,
            latency,
            objects,
            audit_events,
            build,
            gateway: std::sync::OnceLock::new(),
        }
    }

    /// Refreshes store gauges, then renders the text exposition format.
    pub async fn render(&self, state: &AppState) -> String {
        let store = state.platform.store();
        // Counted by the database: a scrape never reads the (possibly many) documents.
        if let Ok(counts) = store.count_objects_by_kind().await {
            for k in plinth_config::kinds::KINDS {
                self.objects
                    .get_or_create(&KindLabels {
                        kind: k.name.to_string(),
                    })
                    .set(counts.get(k.name).copied().unwrap_or(0));
            }
        }
        self.cost.refresh(store).await;
        if let Ok(n) = store.count_audit().await {
            self.audit_events.set(n);
        }
        if let Ok(latest) = state.platform.latest_dataset_versions().await {
            self.freshness_lag.clear();
            self.dataset_checks.clear();
            let now = chrono::Utc::now();
            for (contract, v) in latest {
                if let Some(t) = v
                    .spec
                    .freshness
                    .as_deref()
                    .and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok())
                {
                    let lag = (now - t.with_timezone(&chrono::Utc)).num_microseconds();
                    self.freshness_lag
                        .get_or_create(&ContractLabels {
                            contract: contract.clone(),
                        })
                        .set(lag.unwrap_or(i64::MAX) as f64 / 1e6);
                }
                for (status, n) in &v.spec.counts {
                    self.dataset_checks
                        .get_or_create(&ContractStatusLabels {
                            contract: contract.clone(),
                            status: status.clone(),
                        })
                        .set(i64::try_from(*n).unwrap_or(i64::MAX));
                }
            }
        }
        self.build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                backend: store.backend().as_str().to_string(),
            })
            .set(1);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        if let Some(g) = self.gateway.get() {
            out.push_str(&g.metrics_text());
        }
        to_prometheus_text(&out)
    }
}

/// prometheus-client writes OpenMetrics text; `/metrics` serves the Prometheus text format
/// 0.0.4 that its content type names, where a counter's HELP and TYPE lines name the `_total`
/// series itself and there is no `# EOF` line (promtool reads it that way too).
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {rest}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Middleware counting every request by its route template (never the raw path).
pub async fn track(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels { method, route })
        .observe(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

    #[test]
    fn counters_are_named_by_their_total_series() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"b\"} 1\n\
                  # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"b\"} 1\n\
             # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
