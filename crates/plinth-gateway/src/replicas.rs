//! The data-plane side of local replicas: a version whose upstream is `replicas` routes to a
//! [`ReplicaPool`], a live list of ready endpoints that the replica controller (in `plinth
//! serve`) fills as processes start, pass their readiness check, crash or are scaled away.
//! Requests pick the ready endpoint with the fewest requests in progress (or round robin);
//! while none is ready they wait in a bounded queue (a cold start) and get 503 when it is full
//! or their wait is over. The pool also measures the load the autoscaler reads: the peak of
//! requests in progress plus waiting since the last sample, and when the last request came.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::spec::{AutoscalingSpec, LoadBalancing};

/// One ready replica as routing sees it.
#[derive(Debug)]
pub struct Endpoint {
    /// The replica's id (its executor attempt).
    pub id: String,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    in_flight: AtomicUsize,
}

impl Endpoint {
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            id: id.into(),
            url: url.into(),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Requests this replica is serving now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Why no replica could take a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// One replica as the controller reports it (API, CLI, console).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInfo {
    pub id: String,
    /// `starting`, `ready`, `draining` or `stopping`.
    pub state: String,
    pub pid: u32,
    pub port: u16,
    /// Requests in progress on it.
    pub in_flight: usize,
    /// RFC 3339.
    pub started_at: String,
    /// GPU indices it sees in `CUDA_VISIBLE_DEVICES`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
}

/// A version's replicas as the controller reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasView {
    /// Replicas the autoscaler wants now.
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// Ready replicas (getting traffic).
    pub ready: u32,
    /// Requests waiting for a ready replica.
    pub queued: usize,
    /// Replicas that crashed, failed their readiness or health check, or never started.
    pub restarts: u64,
    /// The last problem (a crash, a start that failed), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_problem: Option<String>,
    pub replicas: Vec<ReplicaInfo>,
}

/// The live endpoints of one version with replicas. Shared by every generation of the
/// deployment that keeps the version's name, so replicas outlive a re-applied spec.
#[derive(Debug)]
pub struct ReplicaPool {
    pub deployment: String,
    pub version: String,
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    ready: Notify,
    demand: Arc<Notify>,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    arrivals: AtomicU64,
    last_request_ms: AtomicU64,
    next: AtomicUsize,
    round_robin: std::sync::atomic::AtomicBool,
    queue_limit: AtomicUsize,
    queue_timeout_ms: AtomicU64,
    view: RwLock<ReplicasView>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A request's hold on one replica; dropping it ends the request there.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<ReplicaPool>,
    endpoint: Arc<Endpoint>,
}

impl Lease {
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.pool.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ReplicaPool {
    pub(crate) fn new(deployment: &str, version: &str, demand: Arc<Notify>) -> ReplicaPool {
        ReplicaPool {
            deployment: deployment.to_owned(),
            version: version.to_owned(),
            endpoints: RwLock::new(Vec::new()),
            ready: Notify::new(),
            demand,
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            arrivals: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(now_ms()),
            next: AtomicUsize::new(0),
            round_robin: std::sync::atomic::AtomicBool::new(false),
            queue_limit: AtomicUsize::new(100),
            queue_timeout_ms: AtomicU64::new(60_000),
            view: RwLock::new(ReplicasView::default()),
        }
    }

    /// Applies a (re-applied) version's load balancing and queue settings.
    pub(crate) fn configure(&self, lb: LoadBalancing, a: &AutoscalingSpec) {
        self.round_robin
            .store(lb == LoadBalancing::RoundRobin, Ordering::Relaxed);
        self.queue_limit
            .store(a.queue_limit as usize, Ordering::Relaxed);
        self.queue_timeout_ms.store(
            a.queue_timeout_seconds.saturating_mul(1000),
            Ordering::Relaxed,
        );
        let mut view = match self.view.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        view.min = a.min_replicas;
        view.max = a.max();
    }

    /// Replaces the ready endpoints (the controller's call); waiting requests try again.
    pub fn set_endpoints(&self, endpoints: Vec<Arc<Endpoint>>) {
        match self.endpoints.write() {
            Ok(mut g) => *g = endpoints,
            Err(p) => *p.into_inner() = endpoints,
        }
        self.ready.notify_waiters();
    }

    /// The ready endpoints.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        match self.endpoints.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Requests waiting for a ready replica now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Requests being served by the replicas now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The highest number of requests in progress plus waiting since the last call (at least
    /// the current number), and the requests that arrived since the last call.
    pub fn take_load(&self) -> (usize, u64) {
        let now = self.in_flight() + self.queued();
        let peak = self.peak.swap(now, Ordering::Relaxed).max(now);
        (peak, self.arrivals.swap(0, Ordering::Relaxed))
    }

    /// Milliseconds since the Unix epoch of the last request (or of the pool's creation).
    pub fn last_request_ms(&self) -> u64 {
        self.last_request_ms.load(Ordering::Relaxed)
    }

    /// Publishes the controller's view (read by status and the API).
    pub fn set_view(&self, view: ReplicasView) {
        match self.view.write() {
            Ok(mut g) => *g = view,
            Err(p) => *p.into_inner() = view,
        }
    }

    pub fn view(&self) -> ReplicasView {
        let mut v = match self.view.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        v.queued = self.queued();
        v
    }

    fn note_load(&self) {
        let now = self.in_flight() + self.queued();
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn pick(self: &Arc<Self>) -> Option<Lease> {
        let eps = match self.endpoints.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if eps.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = eps.len();
        let ep = if self.round_robin.load(Ordering::Relaxed) {
            &eps[start % n]
        } else {
            // Least outstanding; scanning from a rotating start breaks ties round robin.
            let mut best = &eps[start % n];
            for k in 1..n {
                let e = &eps[(start + k) % n];
                if e.in_flight() < best.in_flight() {
                    best = e;
                }
            }
            best
        };
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            pool: Arc::clone(self),
            endpoint: Arc::clone(ep),
        })
    }

    /// A ready replica for one attempt: at once when one is ready, else after waiting in the
    /// queue (the controller is told there is demand, so a version scaled to zero starts one).
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, Unavailable> {
        self.last_request_ms.store(now_ms(), Ordering::Relaxed);
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.pick() {
            self.note_load();
            return Ok(l);
        }
        let limit = self.queue_limit.load(Ordering::Relaxed);
        let waiting = self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = QueuedGuard(self);
        if waiting >= limit {
            return Err(Unavailable(format!(
                "version `{}` of deployment `{}` has no ready replica and {waiting} requests are already waiting (queueLimit {limit})",
                self.version, self.deployment
            )));
        }
        self.note_load();
        self.demand.notify_one();
        let wait = Duration::from_millis(self.queue_timeout_ms.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(l) = self.pick() {
                return Ok(l);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Unavailable(format!(
                    "no replica of version `{}` of deployment `{}` became ready within {} s",
                    self.version,
                    self.deployment,
                    wait.as_secs()
                )));
            }
        }
    }
}

struct QueuedGuard<'a>(&'a ReplicaPool);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Replica pools by deployment and version, shared by the gateway's generations of
/// deployments and the controller. `demand` is notified whenever a request starts waiting.
#[derive(Debug, Default)]
pub struct ReplicaRegistry {
    pools: std::sync::Mutex<std::collections::HashMap<(String, String), Arc<ReplicaPool>>>,
    demand: Arc<Notify>,
}

impl ReplicaRegistry {
    pub(crate) fn pool(&self, deployment: &str, version: &str) -> Arc<ReplicaPool> {
        let mut g = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            g.entry((deployment.to_owned(), version.to_owned()))
                .or_insert_with(|| {
                    Arc::new(ReplicaPool::new(
                        deployment,
                        version,
                        Arc::clone(&self.demand),
                    ))
                }),
        )
    }

    /// Forgets the pools not in `keep`.
    pub(crate) fn retain(&self, keep: &std::collections::HashSet<(String, String)>) {
        self.pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| keep.contains(k));
    }

    /// Notified whenever a request starts waiting for a replica.
    pub fn demand(&self) -> Arc<Notify> {
        Arc::clone(&self.demand)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pool() -> Arc<ReplicaPool> {
        let p = Arc::new(ReplicaPool::new("d", "v1", Arc::new(Notify::new())));
        p.configure(
            LoadBalancing::LeastOutstanding,
            &AutoscalingSpec {
                queue_limit: 2,
                queue_timeout_seconds: 1,
                ..Default::default()
            },
        );
        p
    }

    #[tokio::test]
    async fn least_outstanding_spreads_requests() {
        let p = pool();
        p.set_endpoints(vec![
            Endpoint::new("a", "http://a"),
            Endpoint::new("b", "http://b"),
        ]);
        let l1 = p.acquire().await.unwrap();
        let l2 = p.acquire().await.unwrap();
        assert_ne!(l1.url(), l2.url(), "the second goes to the idle replica");
        drop(l1);
        let l3 = p.acquire().await.unwrap();
        assert_ne!(l3.url(), l2.url());
        assert_eq!(p.in_flight(), 2);
        assert_eq!(p.take_load().0, 2);
        drop((l2, l3));
        assert_eq!(p.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_replica_that_becomes_ready() {
        let p = pool();
        let p2 = Arc::clone(&p);
        let waiter = tokio::spawn(async move { p2.acquire().await.map(|l| l.url().to_owned()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(p.queued(), 1);
        assert_eq!(p.take_load().0, 1, "a waiting request is load");
        p.set_endpoints(vec![Endpoint::new("a", "http://a")]);
        assert_eq!(waiter.await.unwrap().unwrap(), "http://a");
        assert_eq!(p.queued(), 0);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_waits_time_out() {
        let p = pool();
        let a = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.acquire().await.map(|_| ()) }
        });
        let b = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.acquire().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let full = p.acquire().await.expect_err("queue full");
        assert!(full.0.contains("queueLimit 2"), "{}", full.0);
        let t = a.await.unwrap().expect_err("timed out");
        assert!(t.0.contains("within 1 s"), "{}", t.0);
        assert!(b.await.unwrap().is_err());
        assert_eq!(p.queued(), 0);
    }
}
