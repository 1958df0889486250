//! The inference gateway inside `plinth serve`: the `plinth-gateway` data plane on its own port,
//! fed from the stored `Deployment` resources (re-read every second, so a re-applied deployment
//! is hot-swapped), with the server's bearer tokens as API keys, usage records written to the
//! store in batches off the request path, and automatic canary rollbacks audited and recorded in
//! a `DeploymentStatus` object.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use plinth_config::kinds::{DEPLOYMENT_KIND, DEPLOYMENT_STATUS_KIND};
use plinth_core::{Platform, authorize_read, document_digest};
use plinth_gateway::auth::AuthFuture;
use plinth_gateway::{
    Authenticator, CanaryEvents, ChannelSink, DeploymentSpec, Gateway, PricingSpec, RollbackEvent,
    UsageRecord, VersionRole,
};
use plinth_store::usage::{SOURCE_GATEWAY, UsageRow};
use plinth_store::{Batch, Op, Precondition};
use plinth_types::audit::NewAuditEvent;
use plinth_types::{Document, ErrorCode, ObjectMeta, StoredObject};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

/// How often the stored Deployments are compared with the ones being served.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How long a bearer token's identity is reused before the store is asked again (a revoked
/// token stops working within this time).
const AUTH_TTL: Duration = Duration::from_secs(5);
/// Usage records waiting to be written; beyond this they are dropped and counted.
const USAGE_QUEUE: usize = 200_000;
/// The most usage records written in one transaction.
const USAGE_BATCH: usize = 2_000;
/// Rollbacks kept in a deployment's status.
const ROLLBACK_HISTORY: usize = 20;
/// The `pool` of gateway usage rows: upstreams are not pools Plinth schedules.
pub const USAGE_POOL: &str = "gateway";

/// The server's tokens as gateway API keys: the token's team and id become the caller's team
/// and key id. Identities are cached for [`AUTH_TTL`], keyed by a hash of the token.
struct TokenKeys {
    platform: Platform,
    cache: RwLock<HashMap<[u8; 32], (plinth_gateway::Identity, Instant)>>,
}

impl Authenticator for TokenKeys {
    fn authenticate<'a>(&'a self, api_key: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let key: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
            if let Ok(c) = self.cache.read()
                && let Some((id, at)) = c.get(&key)
                && at.elapsed() < AUTH_TTL
            {
                return Some(id.clone());
            }
            let who = self.platform.authenticate(api_key).await.ok()?;
            let id = plinth_gateway::Identity {
                team: who.team.unwrap_or_default(),
                key_id: who.token_id,
            };
            if let Ok(mut c) = self.cache.write() {
                if c.len() > 100_000 {
                    c.clear();
                }
                c.insert(key, (id.clone(), Instant::now()));
            }
            Some(id)
        })
    }
}

/// The usage channel, counting what was queued so a shutdown can wait for the writer.
struct CountingSink {
    inner: ChannelSink,
    queued: std::sync::atomic::AtomicU64,
}

impl plinth_gateway::UsageSink for CountingSink {
    fn record(&self, record: UsageRecord) {
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.record(record);
    }
}

/// The store's `gateway_limit_windows` as the gateway's shared limit counters (PostgreSQL: every
/// gateway on the store shares its limit windows).
struct StoreLimits(plinth_store::Store);

impl plinth_gateway::limits::LimitStore for StoreLimits {
    fn add<'a>(
        &'a self,
        key: &'a plinth_gateway::limits::WindowKey,
        add: plinth_gateway::limits::Counts,
    ) -> plinth_gateway::limits::LimitFuture<'a> {
        use plinth_store::gateway_limits::{LimitCounts, LimitWindow};
        Box::pin(async move {
            let total = self
                .0
                .add_gateway_limit_counts(
                    LimitWindow {
                        deployment: &key.deployment,
                        limit_key: &key.limit,
                        subject: &key.subject,
                        window_start: key.window_start,
                        window_end: key.window_end,
                    },
                    LimitCounts {
                        requests: i64::try_from(add.requests).unwrap_or(i64::MAX),
                        tokens: i64::try_from(add.tokens).unwrap_or(i64::MAX),
                        spend: add.spend,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(plinth_gateway::limits::Counts {
                requests: u64::try_from(total.requests).unwrap_or(0),
                tokens: u64::try_from(total.tokens).unwrap_or(0),
                spend: total.spend,
            })
        })
    }
}

/// Deletes the shared limit windows that ended more than a minute ago, every minute.
async fn prune_limit_windows(store: plinth_store::Store) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Err(e) = store.prune_gateway_limit_windows(now - 60).await {
            tracing::warn!(error = %e, "gateway: cannot delete ended limit windows");
        }
    }
}

/// A Redis limit store for `url`, checked with a `PING` at start: Redis refusing (a wrong
/// password, a database that does not exist) or not speaking Redis is an error naming `setting`;
/// Redis not reachable yet is a warning, since the gateway counts on its own until it is (see
/// [`plinth_gateway::limits`]).
pub async fn redis_limit_store(
    url: plinth_gateway::limits_redis::RedisUrl,
    setting: &str,
) -> Result<Arc<dyn plinth_gateway::limits::LimitStore>, String> {
    use plinth_gateway::limits_redis::{RedisErrorKind, RedisLimitStore};
    let store = RedisLimitStore::new(url);
    match store.ping().await {
        Ok(()) => {
            tracing::info!(redis = %store.address(), "gateway: limit windows shared through Redis");
        }
        Err(e) if e.kind == RedisErrorKind::Unreachable => {
            tracing::warn!(error = %e, "gateway: {setting}: Redis is not reachable yet; limits are counted by each gateway on its own until it is");
        }
        Err(e) => return Err(format!("{setting}: {e}")),
    }
    Ok(Arc::new(store))
}

/// Forwards rollbacks to the task that audits them (the callback must not block).
struct RollbackForwarder(tokio::sync::mpsc::UnboundedSender<RollbackEvent>);

impl CanaryEvents for RollbackForwarder {
    fn rolled_back(&self, event: RollbackEvent) {
        let _ = self.0.send(event);
    }
}

/// One deployment as built from its stored object.
#[derive(Debug, Clone)]
struct Built {
    digest: String,
    generation: i64,
    created_at: String,
    team: String,
    spec: DeploymentSpec,
    /// Configured weights (the spec given to the gateway has the canary at 0 when a rollback of
    /// this generation was stored, e.g. before a restart or by another server).
    weights: Vec<u32>,
    canary_zeroed: bool,
}

#[derive(Debug, Default)]
struct Loaded {
    built: BTreeMap<String, Built>,
    /// Deployments stored but not served, and why (e.g. a model name another one serves).
    problems: BTreeMap<String, String>,
    /// The stored DeploymentStatus objects, by deployment.
    statuses: BTreeMap<String, StoredStatus>,
    /// Digest of every stored Deployment at the last sync (served or not).
    seen: BTreeMap<String, String>,
    /// Whether the stored Deployments were read once.
    synced: bool,
}

/// The stored status of a deployment (a `DeploymentStatus` object's spec).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredStatus {
    /// Generation of the Deployment whose canary was rolled back last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_generation: Option<i64>,
    /// When that Deployment was created (a deployment deleted and applied again starts over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_created_at: Option<String>,
    /// Automatic rollbacks, oldest first (the last 20).
    #[serde(default)]
    pub rollbacks: Vec<Rollback>,
}

impl StoredStatus {
    /// Whether the canary of this very Deployment object and generation was rolled back.
    fn rolled_back(&self, generation: i64, created_at: &str) -> bool {
        self.rolled_back_generation == Some(generation)
            && self.deployment_created_at.as_deref() == Some(created_at)
    }
}

/// One automatic canary rollback, with the numbers that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub at: String,
    pub generation: i64,
    pub canary_version: String,
    pub reason: String,
    pub canary_requests: u64,
    pub canary_error_rate: f64,
    pub stable_error_rate: f64,
    pub canary_p95_ms: f64,
    pub stable_p95_ms: f64,
}

/// A version of a deployment as routing sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionState {
    pub name: String,
    /// `stable` or `canary`.
    pub role: String,
    /// Weight in the applied spec.
    pub weight: u32,
    /// Weight traffic gets now (0 for a rolled-back canary).
    pub effective_weight: u32,
    /// Share of new traffic, 0–1.
    pub share: f64,
    pub upstreams: Vec<String>,
    /// Its local replicas (desired, ready, each replica's state), when it has `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<plinth_gateway::replicas::ReplicasView>,
}

/// A deployment's live state in the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentState {
    pub name: String,
    pub team: String,
    pub generation: i64,
    pub models: Vec<String>,
    /// Whether the gateway routes to it (false with `problem` set when it cannot).
    pub serving: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub versions: Vec<VersionState>,
    /// Whether the canary of this generation was rolled back automatically.
    pub canary_rolled_back: bool,
    pub rollbacks: Vec<Rollback>,
    pub cache_entries: usize,
    pub cache_bytes: u64,
    /// Token prices, when the deployment has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingSpec>,
}

/// The gateway as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayState {
    /// Base URL of the OpenAI-compatible API (`…/v1`); `None` when the gateway is off.
    pub url: Option<String>,
    pub in_flight: i64,
    /// Usage records dropped because the write queue was full.
    pub usage_dropped: u64,
    pub deployments: Vec<DeploymentState>,
}

/// The gateway running inside the server.
pub struct ServerGateway {
    pub gateway: Gateway,
    addr: Mutex<Option<SocketAddr>>,
    platform: Platform,
    loaded: Mutex<Loaded>,
    usage: Arc<CountingSink>,
    /// Usage records the writer is done with (stored, or given up after retries).
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl ServerGateway {
    /// Builds the gateway and starts its background tasks: the deployment sync, the usage writer
    /// and the rollback recorder. Serving on a port is separate ([`ServerGateway::serve`]).
    /// `limit_store` (Redis, [`redis_limit_store`]) shares the limit windows instead of the
    /// store's PostgreSQL.
    pub fn start(
        platform: Platform,
        metrics: &crate::metrics::Metrics,
        otlp: Option<plinth_gateway::OtlpConfig>,
        upstream_ca_certs: Vec<Vec<u8>>,
        limit_store: Option<Arc<dyn plinth_gateway::limits::LimitStore>>,
    ) -> Arc<ServerGateway> {
        let (sink, usage_rx) = ChannelSink::new(USAGE_QUEUE);
        let usage = Arc::new(CountingSink {
            inner: sink,
            queued: std::sync::atomic::AtomicU64::new(0),
        });
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut builder = Gateway::builder(Arc::new(TokenKeys {
            platform: platform.clone(),
            cache: RwLock::new(HashMap::new()),
        }))
        .usage_sink(usage.clone())
        .canary_events(Arc::new(RollbackForwarder(events_tx)))
        .otlp(otlp)
        .options(plinth_gateway::GatewayOptions {
            upstream_ca_certs,
            ..Default::default()
        });
        // On PostgreSQL several gateways (servers, `plinth gateway --database-url`) may share the
        // store: their limit windows are shared through it, unless a Redis was given for them.
        let store = platform.store();
        if let Some(limits) = limit_store {
            builder = builder.limit_store(limits);
        } else if store.backend() == plinth_store::Backend::Postgres {
            builder = builder.limit_store(Arc::new(StoreLimits(store.clone())));
            tokio::spawn(prune_limit_windows(store.clone()));
        }
        let gateway = builder.build();
        metrics.attach_gateway(gateway.clone());
        let me = Arc::new(ServerGateway {
            gateway,
            addr: Mutex::new(None),
            platform,
            loaded: Mutex::new(Loaded::default()),
            usage,
            written: Arc::clone(&written),
        });
        tokio::spawn(Arc::clone(&me).sync_loop());
        tokio::spawn(write_usage(me.platform.clone(), usage_rx, written));
        tokio::spawn(Arc::clone(&me).record_rollbacks(events_rx));
        me
    }

    /// Serves the OpenAI-compatible API on `listener` until `shutdown` resolves.
    pub fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        if let Ok(mut a) = self.addr.lock() {
            *a = Some(addr);
        }
        let gateway = self.gateway.clone();
        tokio::spawn(async move {
            if let Err(e) = plinth_gateway::serve(listener, gateway, shutdown).await {
                tracing::error!(error = %e, "gateway stopped");
            }
        });
        Ok(addr)
    }

    /// Waits (at most `limit`) until every usage record queued so far is written: called on
    /// shutdown after the listeners stopped, before the store closes.
    pub async fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let target = self
            .usage
            .queued
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(self.usage.inner.dropped());
        while self.written.load(std::sync::atomic::Ordering::Relaxed) < target {
            if Instant::now() >= deadline {
                tracing::warn!(
                    pending = target - self.written.load(std::sync::atomic::Ordering::Relaxed),
                    "gateway: usage records not written before shutdown"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The team that owns a served deployment.
    pub(crate) fn team_of(&self, deployment: &str) -> Option<String> {
        self.loaded
            .lock()
            .ok()
            .and_then(|l| l.built.get(deployment).map(|b| b.team.clone()))
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.addr.lock().ok().and_then(|a| *a)
    }

    async fn sync_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "gateway: cannot read deployments");
            }
            tokio::time::sleep(SYNC_EVERY).await;
        }
    }

    /// Reads the stored Deployments and installs them when any changed.
    async fn sync(&self) -> Result<(), plinth_store::StoreError> {
        let store = self.platform.store();
        let mut objects = store.list_objects(DEPLOYMENT_KIND).await?;
        let status_objects = store.list_objects(DEPLOYMENT_STATUS_KIND).await?;
        // Deployments and statuses (another server's rollback arrives as a status) by digest.
        let seen: BTreeMap<String, String> = objects
            .iter()
            .map(|o| (o.name.clone(), o.digest.clone()))
            .chain(
                status_objects
                    .iter()
                    .map(|o| (format!("status/{}", o.name), o.digest.clone())),
            )
            .collect();
        let unchanged = self.loaded.lock().is_ok_and(|l| l.synced && l.seen == seen);
        if unchanged {
            return Ok(());
        }
        let statuses: BTreeMap<String, StoredStatus> = status_objects
            .into_iter()
            .filter_map(|o| Some((o.name, serde_json::from_value(o.document.spec).ok()?)))
            .collect();
        let live_rolled_back: std::collections::BTreeSet<String> = self
            .gateway
            .status()
            .into_iter()
            .filter(|d| d.canary_rolled_back)
            .map(|d| d.name)
            .collect();
        // The oldest deployment keeps a model name two of them claim.
        objects.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
        let previous = self
            .loaded
            .lock()
            .map(|l| l.built.clone())
            .unwrap_or_default();
        let mut built = Vec::new();
        let mut problems = BTreeMap::new();
        for o in &objects {
            // A canary rolled back by another server sharing the store is rolled back here too.
            let stored_rollback = statuses
                .get(&o.name)
                .is_some_and(|st| st.rolled_back(o.generation, &o.created_at));
            match previous.get(&o.name) {
                Some(b)
                    if b.digest == o.digest
                        && (!stored_rollback
                            || b.canary_zeroed
                            || live_rolled_back.contains(&o.name)) =>
                {
                    built.push((o.name.clone(), b.clone()))
                }
                _ => match build(o, statuses.get(&o.name)) {
                    Ok(b) => built.push((o.name.clone(), b)),
                    Err(e) => {
                        problems.insert(o.name.clone(), e);
                    }
                },
            }
        }
        // Drop the deployments the set rejects (a model name taken, a fallback not served)
        // one at a time, naming why.
        loop {
            let specs: Vec<DeploymentSpec> = built.iter().map(|(_, b)| b.spec.clone()).collect();
            match self.gateway.set_deployments(specs) {
                Ok(()) => break,
                Err(e) => {
                    let index = e
                        .field
                        .strip_prefix("deployments[")
                        .and_then(|r| r.split_once(']'))
                        .and_then(|(i, _)| i.parse::<usize>().ok())
                        .filter(|&i| i < built.len());
                    let Some(i) = index else {
                        tracing::warn!(error = %e, "gateway: deployments rejected");
                        break;
                    };
                    let (name, _) = built.remove(i);
                    let rest = e.field.split_once(']').map_or("", |(_, r)| r);
                    let rest = rest.strip_prefix('.').unwrap_or(rest);
                    problems.insert(name, format!("spec.{rest}: {}", e.message));
                }
            }
        }
        for (name, p) in &problems {
            tracing::warn!(deployment = %name, problem = %p, "gateway: deployment not served");
        }
        if let Ok(mut l) = self.loaded.lock() {
            l.built = built.into_iter().collect();
            l.problems = problems;
            l.statuses = statuses;
            l.seen = seen;
            l.synced = true;
        }
        Ok(())
    }

    /// Audits each automatic rollback and stores it in the deployment's status.
    async fn record_rollbacks(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<RollbackEvent>,
    ) {
        while let Some(ev) = rx.recv().await {
            let mut tries = 0;
            loop {
                tries += 1;
                match self.record_rollback(&ev).await {
                    Ok(()) => break,
                    Err(e) if tries < 20 => {
                        tracing::warn!(deployment = %ev.deployment, error = %e, "gateway: cannot record a rollback yet; retrying");
                        tokio::time::sleep(Duration::from_millis(250 * tries)).await;
                    }
                    Err(e) => {
                        tracing::error!(deployment = %ev.deployment, error = %e, "gateway: rollback not recorded");
                        break;
                    }
                }
            }
        }
    }

    async fn record_rollback(&self, ev: &RollbackEvent) -> Result<(), plinth_store::StoreError> {
        let (generation, created_at, team) = self
            .loaded
            .lock()
            .ok()
            .and_then(|l| {
                l.built
                    .get(&ev.deployment)
                    .map(|b| (b.generation, b.created_at.clone(), b.team.clone()))
            })
            .unwrap_or_default();
        let store = self.platform.store();
        let now = self.platform.now();
        let existing = store
            .get_object(DEPLOYMENT_STATUS_KIND, &ev.deployment)
            .await?;
        let mut status: StoredStatus = existing
            .as_ref()
            .and_then(|o| serde_json::from_value(o.document.spec.clone()).ok())
            .unwrap_or_default();
        let rollback = Rollback {
            at: now.clone(),
            generation,
            canary_version: ev.canary_version.clone(),
            reason: ev.reason.clone(),
            canary_requests: ev.canary_requests,
            canary_error_rate: ev.canary_error_rate,
            stable_error_rate: ev.stable_error_rate,
            canary_p95_ms: ev.canary_p95_ms,
            stable_p95_ms: ev.stable_p95_ms,
        };
        status.rolled_back_generation = Some(generation);
        status.deployment_created_at = Some(created_at);
        status.rollbacks.push(rollback.clone());
        let excess = status.rollbacks.len().saturating_sub(ROLLBACK_HISTORY);
        status.rollbacks.drain(..excess);
        let document = Document {
            api_version: plinth_types::API_VERSION.to_string(),
            kind: DEPLOYMENT_STATUS_KIND.to_string(),
            metadata: ObjectMeta {
                name: ev.deployment.clone(),
                ..Default::default()
            },
            spec: serde_json::to_value(&status).unwrap_or_default(),
        };
        let digest = document_digest(&document);
        let object = StoredObject {
            kind: DEPLOYMENT_STATUS_KIND.to_string(),
            name: ev.deployment.clone(),
            team: (!team.is_empty()).then(|| team.clone()),
            digest: digest.clone(),
            generation: existing.as_ref().map_or(1, |o| o.generation + 1),
            created_at: existing
                .as_ref()
                .map_or_else(|| now.clone(), |o| o.created_at.clone()),
            updated_at: now.clone(),
            updated_by: "system:gateway".to_string(),
            document,
        };
        let event = NewAuditEvent {
            ts: now,
            actor: "system:gateway".to_string(),
            action: "deployment.canary_rollback".to_string(),
            kind: DEPLOYMENT_KIND.to_string(),
            name: ev.deployment.clone(),
            team: (!team.is_empty()).then_some(team),
            before_digest: existing.map(|o| o.digest),
            after_digest: Some(digest),
            detail: serde_json::to_value(&rollback).unwrap_or_default(),
        };
        store
            .commit(
                Batch::new()
                    .op(Op::PutObject {
                        object,
                        precondition: Precondition::None,
                    })
                    .event(event),
            )
            .await?;
        if let Ok(mut l) = self.loaded.lock() {
            l.statuses.insert(ev.deployment.clone(), status);
        }
        tracing::warn!(deployment = %ev.deployment, canary = %ev.canary_version, reason = %ev.reason, "gateway: canary rolled back");
        Ok(())
    }

    /// The gateway and the deployments `who` may read.
    pub fn state(&self, who: &plinth_types::Identity) -> GatewayState {
        let live = self.gateway.status();
        let (built, problems, statuses) = match self.loaded.lock() {
            Ok(l) => (l.built.clone(), l.problems.clone(), l.statuses.clone()),
            Err(_) => Default::default(),
        };
        let mut deployments = Vec::new();
        for (name, b) in &built {
            if !authorize_read(who, Some(&b.team)) {
                continue;
            }
            let status = statuses.get(name).cloned().unwrap_or_default();
            let stored_rollback = status.rolled_back(b.generation, &b.created_at);
            let l = live.iter().find(|d| &d.name == name);
            let rolled_back = stored_rollback || l.is_some_and(|d| d.canary_rolled_back);
            let versions: Vec<(usize, u32)> = b
                .spec
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let eff = l
                        .and_then(|d| d.versions.iter().find(|x| x.name == v.name))
                        .map_or(v.weight, |x| x.effective_weight);
                    let eff = if v.role == VersionRole::Canary && rolled_back {
                        0
                    } else {
                        eff
                    };
                    (i, eff)
                })
                .collect();
            let total: u64 = versions.iter().map(|(_, e)| u64::from(*e)).sum();
            deployments.push(DeploymentState {
                name: name.clone(),
                team: b.team.clone(),
                generation: b.generation,
                models: b.spec.models.clone(),
                serving: true,
                problem: None,
                versions: versions
                    .iter()
                    .map(|&(i, eff)| {
                        let v = &b.spec.versions[i];
                        VersionState {
                            name: v.name.clone(),
                            role: role_name(v.role).to_string(),
                            weight: b.weights.get(i).copied().unwrap_or(v.weight),
                            effective_weight: eff,
                            share: if total == 0 {
                                0.0
                            } else {
                                f64::from(eff) / total as f64
                            },
                            upstreams: v.upstreams.clone(),
                            replicas: l
                                .and_then(|d| d.versions.iter().find(|x| x.name == v.name))
                                .and_then(|x| x.replicas.clone()),
                        }
                    })
                    .collect(),
                canary_rolled_back: rolled_back,
                rollbacks: status.rollbacks,
                cache_entries: l.map_or(0, |d| d.cache_entries),
                cache_bytes: l.map_or(0, |d| d.cache_bytes),
                pricing: b.spec.pricing.clone(),
            });
        }
        for (name, problem) in problems {
            deployments.push(DeploymentState {
                name: name.clone(),
                team: String::new(),
                generation: 0,
                models: Vec::new(),
                serving: false,
                problem: Some(problem),
                versions: Vec::new(),
                canary_rolled_back: false,
                rollbacks: statuses.get(&name).cloned().unwrap_or_default().rollbacks,
                cache_entries: 0,
                cache_bytes: 0,
                pricing: None,
            });
        }
        deployments.sort_by(|a, b| a.name.cmp(&b.name));
        GatewayState {
            url: self.addr().map(|a| format!("http://{a}/v1")),
            in_flight: self.gateway.in_flight(),
            usage_dropped: self.usage.inner.dropped(),
            deployments,
        }
    }
}

/// `plinth gateway --database-url URL`: only the gateway, against a store `plinth serve` uses
/// (PostgreSQL, for scale-out): the stored Deployments, the server's tokens as keys, usage rows
/// and rollbacks into that store; limit windows shared through that store, or through
/// `limits_redis` when given (`--limits-redis`). Serves until SIGINT or SIGTERM, then writes the
/// usage records still queued.
pub async fn serve_alone(
    database_url: &str,
    listen: SocketAddr,
    otlp: Option<plinth_gateway::OtlpConfig>,
    upstream_ca_certs: Vec<Vec<u8>>,
    limits_redis: Option<plinth_gateway::limits_redis::RedisUrl>,
    replicas_dir: Option<std::path::PathBuf>,
    on_start: impl FnOnce(SocketAddr),
) -> Result<(), crate::ServeError> {
    let limits = match limits_redis {
        Some(url) => Some(
            redis_limit_store(url, "--limits-redis")
                .await
                .map_err(crate::ServeError::Gateway)?,
        ),
        None => None,
    };
    let store = plinth_store::Store::connect(database_url).await?;
    let metrics = crate::metrics::Metrics::new();
    let me = ServerGateway::start(
        Platform::new(store.clone()),
        &metrics,
        otlp,
        upstream_ca_certs,
        limits,
    );
    let listener =
        tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| crate::ServeError::Bind {
                addr: listen,
                message: e.to_string(),
            })?;
    let addr = listener.local_addr()?;
    // This gateway's own local replicas of the Deployments (each gateway started with a
    // replicas directory runs its own, on its machine, outside the server's job scheduler).
    let replicas = match replicas_dir {
        Some(dir) => Some(
            crate::replicas::Replicas::start(
                store.clone(),
                Arc::clone(&me),
                dir.clone(),
                REPLICA_USAGE_INTERVAL,
                None,
            )
            .map_err(|message| crate::ServeError::DataDir {
                path: dir.display().to_string(),
                message,
            })?,
        ),
        None => None,
    };
    on_start(addr);
    let served = plinth_gateway::serve(listener, me.gateway.clone(), crate::stop_requested()).await;
    if let Some(r) = &replicas {
        r.shutdown(Duration::from_secs(10)).await;
    }
    me.flush(Duration::from_secs(10)).await;
    store.close().await;
    served?;
    Ok(())
}

/// How often a standalone gateway's running replicas write their usage so far.
const REPLICA_USAGE_INTERVAL: Duration = Duration::from_secs(60);

fn role_name(r: VersionRole) -> &'static str {
    match r {
        VersionRole::Stable => "stable",
        VersionRole::Canary => "canary",
    }
}

/// The gateway spec of a stored Deployment. A canary whose rollback was stored for this very
/// object and generation stays rolled back (weight 0), e.g. after a restart.
fn build(o: &StoredObject, status: Option<&StoredStatus>) -> Result<Built, String> {
    let mut value = o.document.spec.clone();
    let team = match &mut value {
        serde_json::Value::Object(m) => {
            let team = m
                .remove("team")
                .and_then(|t| t.as_str().map(str::to_string))
                .unwrap_or_default();
            m.insert("name".into(), serde_json::Value::String(o.name.clone()));
            team
        }
        _ => return Err("spec: not a mapping".into()),
    };
    let mut spec: DeploymentSpec =
        serde_json::from_value(value).map_err(|e| format!("spec: {e}"))?;
    let weights = spec.versions.iter().map(|v| v.weight).collect();
    let canary_zeroed = status.is_some_and(|s| s.rolled_back(o.generation, &o.created_at));
    if canary_zeroed {
        for v in &mut spec.versions {
            if v.role == VersionRole::Canary {
                v.weight = 0;
            }
        }
    }
    Ok(Built {
        digest: o.digest.clone(),
        generation: o.generation,
        created_at: o.created_at.clone(),
        team,
        spec,
        weights,
        canary_zeroed,
    })
}

/// Writes usage records to the store: whatever queued since the last look goes in the next
/// transactions (of at most `USAGE_BATCH` rows), so a busy gateway writes big batches and an
/// idle one writes within a few milliseconds.
async fn write_usage(
    platform: Platform,
    mut rx: plinth_gateway::UsageReceiver,
    written: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Some(records) = rx.recv_batch().await {
        for chunk in records.chunks(USAGE_BATCH) {
            write_usage_batch(&platform, chunk, &written).await;
        }
    }
}

/// Writes one batch of usage rows (retrying a store that is not reachable yet) and counts them
/// as written.
async fn write_usage_batch(
    platform: &Platform,
    records: &[UsageRecord],
    written: &std::sync::atomic::AtomicU64,
) {
    let batch: Vec<_> = records.iter().map(usage_row).collect();
    let mut tries = 0u64;
    loop {
        tries += 1;
        match platform.store().record_usage(&batch).await {
            Ok(_) => break,
            Err(e) if tries < 10 => {
                tracing::warn!(error = %e, records = batch.len(), "gateway: cannot write usage yet; retrying");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "gateway: usage records lost");
                break;
            }
        }
    }
    written.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
}

fn rfc3339_micros(unix_ms: u64, plus_seconds: f64) -> String {
    let micros = i64::try_from(unix_ms)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
        .saturating_add((plus_seconds.max(0.0) * 1e6) as i64);
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// One request's usage as a stored usage row (source `gateway`, workload `serving`): tokens,
/// latency, cache hit and fallback are tags the cost engine and the console read.
pub fn usage_row(r: &UsageRecord) -> UsageRow {
    let tags: BTreeMap<String, String> = [
        ("team", r.team.clone()),
        ("key", r.key_id.clone()),
        ("deployment", r.deployment.clone()),
        ("servedBy", r.served_by.clone()),
        ("version", r.version.clone()),
        ("operation", r.operation.to_string()),
        ("model", r.model.clone()),
        ("status", r.status.to_string()),
        ("tokensIn", r.tokens_in.to_string()),
        ("tokensOut", r.tokens_out.to_string()),
        ("cost", format!("{:.9}", r.cost)),
        ("currency", r.currency.clone()),
        ("totalSeconds", format!("{:.6}", r.total_seconds)),
        ("upstreamSeconds", format!("{:.6}", r.upstream_seconds)),
        ("cacheHit", r.cache_hit.to_string()),
        ("fallbackUsed", r.fallback_used.to_string()),
        ("stream", r.stream.to_string()),
        ("completed", r.completed.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let served = if r.served_by.is_empty() {
        &r.deployment
    } else {
        &r.served_by
    };
    UsageRow {
        source: SOURCE_GATEWAY.to_string(),
        id: format!("request/{}", uuid::Uuid::now_v7()),
        workload: "serving".to_string(),
        workload_name: if served.is_empty() {
            "-".to_string()
        } else {
            served.clone()
        },
        attempt: 0,
        pool: USAGE_POOL.to_string(),
        procurement: "on_demand".to_string(),
        start: rfc3339_micros(r.at_unix_ms, 0.0),
        end: rfc3339_micros(r.at_unix_ms, r.total_seconds),
        request_gpus: 0.0,
        request_cpus: 0.0,
        request_memory_gib: 0.0,
        usage_gpus: 0.0,
        usage_cpus: 0.0,
        usage_memory_gib: 0.0,
        tags,
        model_version: (!r.version.is_empty()).then(|| r.version.clone()),
        inferences: 1,
        end_reason: None,
    }
}

/// One request's usage as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageEntry {
    pub start: String,
    pub end: String,
    pub deployment: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Minutes back from now to list (default 60, at most 10080).
    pub minutes: Option<u32>,
}

/// Per-request usage of the gateway's deployments over the last `minutes`, newest first:
/// of deployment `name`, or of every deployment `who` may read.
pub async fn usage_entries(
    platform: &Platform,
    who: &plinth_types::Identity,
    name: Option<&str>,
    minutes: u32,
) -> Result<Vec<UsageEntry>, plinth_core::CoreError> {
    let store = platform.store();
    let visible: BTreeMap<String, Option<String>> = store
        .list_objects(DEPLOYMENT_KIND)
        .await?
        .into_iter()
        .filter(|o| authorize_read(who, o.team.as_deref()))
        .filter(|o| name.is_none_or(|n| n == o.name))
        .map(|o| (o.name, o.team))
        .collect();
    if let Some(n) = name
        && visible.is_empty()
    {
        return Err(plinth_core::CoreError::NotFound(format!(
            "deployment {n:?} not found"
        )));
    }
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::minutes(i64::from(minutes.clamp(1, 10_080)));
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let rows = store
        .list_usage(&fmt(since), &fmt(now + chrono::Duration::minutes(1)))
        .await?;
    let mut out: Vec<UsageEntry> = rows
        .into_iter()
        .filter(|r| r.source == SOURCE_GATEWAY && visible.contains_key(&r.workload_name))
        .map(|r| UsageEntry {
            start: r.start,
            end: r.end,
            deployment: r.workload_name,
            tags: r.tags,
        })
        .collect();
    out.sort_by(|a, b| b.start.cmp(&a.start));
    Ok(out)
}

fn gateway_of(s: &AppState) -> Result<&Arc<ServerGateway>, ApiErrorResponse> {
    s.gateway.as_ref().ok_or_else(|| {
        ApiErrorResponse::new(
            ErrorCode::Unavailable,
            "the gateway is off on this server (started with --no-gateway or gateway_listen: off)",
        )
    })
}

/// The gateway's address and every deployment the caller may read, with its live split and
/// rollback state.
#[utoipa::path(get, path = "/api/v1/gateway", tag = "gateway",
    responses((status = 200, body = GatewayState), (status = 401, body = plinth_types::ApiError),
        (status = 503, description = "gateway off", body = plinth_types::ApiError)),
    security(("bearer" = [])))]
pub async fn get_gateway(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<GatewayState>, ApiErrorResponse> {
    Ok(Json(gateway_of(&s)?.state(&who)))
}

/// One deployment's live split, versions and rollback state.
#[utoipa::path(get, path = "/api/v1/deployments/{name}/status", tag = "gateway",
    params(("name" = String, Path, description = "Deployment name")),
    responses((status = 200, body = DeploymentState), (status = 401, body = plinth_types::ApiError),
        (status = 404, description = "not found", body = plinth_types::ApiError)),
    security(("bearer" = [])))]
pub async fn get_deployment_status(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Json<DeploymentState>, ApiErrorResponse> {
    gateway_of(&s)?
        .state(&who)
        .deployments
        .into_iter()
        .find(|d| d.name == name)
        .map(Json)
        .ok_or_else(|| {
            ApiErrorResponse::new(
                ErrorCode::NotFound,
                format!("deployment {name:?} is not known to the gateway (not applied yet, or not visible to this token)"),
            )
        })
}

/// Per-request usage records of a deployment (team, key, version, tokens, latency, cache hit,
/// fallback), newest first.
#[utoipa::path(get, path = "/api/v1/deployments/{name}/usage", tag = "gateway",
    params(("name" = String, Path, description = "Deployment name"), UsageQuery),
    responses((status = 200, body = [UsageEntry]), (status = 400, body = plinth_types::ApiError), (status = 401, body = plinth_types::ApiError),
        (status = 404, description = "not found", body = plinth_types::ApiError)),
    security(("bearer" = [])))]
pub async fn get_deployment_usage(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Vec<UsageEntry>>, ApiErrorResponse> {
    Ok(Json(
        usage_entries(&s.platform, &who, Some(&name), q.minutes.unwrap_or(60)).await?,
    ))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/gateway", get(get_gateway))
        .route(
            "/api/v1/deployments/{name}/status",
            get(get_deployment_status),
        )
        .route(
            "/api/v1/deployments/{name}/usage",
            get(get_deployment_usage),
        )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_rollback_holds_for_its_object_and_generation_only() {
        let st = StoredStatus {
            rolled_back_generation: Some(2),
            deployment_created_at: Some("2026-01-01T00:00:00.000000Z".into()),
            rollbacks: Vec::new(),
        };
        assert!(st.rolled_back(2, "2026-01-01T00:00:00.000000Z"));
        assert!(
            !st.rolled_back(3, "2026-01-01T00:00:00.000000Z"),
            "re-applied"
        );
        assert!(
            !st.rolled_back(2, "2026-02-01T00:00:00.000000Z"),
            "deleted, created again"
        );
        assert!(!StoredStatus::default().rolled_back(2, "2026-01-01T00:00:00.000000Z"));
    }

    #[test]
    fn a_usage_record_becomes_a_valid_row_with_its_numbers_in_tags() {
        let r = UsageRecord {
            at_unix_ms: 1_700_000_000_123,
            team: "team-a".into(),
            key_id: "tok1".into(),
            deployment: "chat".into(),
            served_by: "backup".into(),
            version: "v2".into(),
            operation: "chat",
            model: "m".into(),
            status: 200,
            tokens_in: 12,
            tokens_out: 34,
            cost: 0.0125,
            currency: "USD".into(),
            total_seconds: 0.25,
            upstream_seconds: 0.2,
            cache_hit: false,
            fallback_used: true,
            stream: false,
            completed: true,
        };
        let row = usage_row(&r);
        row.check().unwrap();
        assert_eq!(row.workload_name, "backup");
        assert_eq!(row.start, "2023-11-14T22:13:20.123000Z");
        assert_eq!(row.end, "2023-11-14T22:13:20.373000Z");
        assert_eq!(row.tags["tokensIn"], "12");
        assert_eq!(row.tags["tokensOut"], "34");
        assert_eq!(row.tags["fallbackUsed"], "true");
        assert_eq!(row.tags["cost"], "0.012500000");
        assert_eq!(row.tags["currency"], "USD");
        assert_eq!(row.tags["deployment"], "chat");
        assert_eq!(row.model_version.as_deref(), Some("v2"));
        assert_ne!(usage_row(&r).id, row.id);
    }
}
