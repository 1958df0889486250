//! Fixed-window request, token and spend limits per team or per key.
//!
//! By default the windows live in this process. With a [`LimitStore`] (the server's PostgreSQL
//! when several gateways share it, or Redis: [`crate::limits_redis`]) they are shared: windows
//! are aligned to the wall clock (a 60 s window starts at each whole minute), each gateway
//! reserves request admissions from the shared counter in chunks ([`request_chunk`]: 2 % of the
//! limit, at least 1, at most 1,000) and admits from its chunk without a round trip, so the
//! gateways together never admit more than the limit (and at least the limit minus one unused chunk per gateway). Token and spend totals are
//! added to the shared counters and read back every [`SHARED_SYNC`], so another gateway's usage
//! is seen within that interval. When the store cannot be reached, a gateway keeps admitting on
//! its own (it logs a warning): limits never take the gateway down.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::Identity;
use crate::spec::{LimitScope, LimitSpec, PricingSpec};

/// How often token and spend counts are exchanged with the [`LimitStore`].
pub const SHARED_SYNC: Duration = Duration::from_millis(250);

/// Counters of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Admissions (for shared windows: reserved by every gateway, which may exceed the limit).
    pub requests: u64,
    pub tokens: u64,
    pub spend: f64,
}

/// One shared window: a deployment's limit, for one subject, in one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowKey {
    pub deployment: String,
    /// `{index}:{scope}:{windowSeconds}` of the limit in the deployment's `limits`.
    pub limit: String,
    /// The team or key id.
    pub subject: String,
    /// Unix seconds the window starts (a multiple of its length).
    pub window_start: i64,
    /// Unix seconds it ends.
    pub window_end: i64,
}

/// The future of [`LimitStore::add`].
pub type LimitFuture<'a> = Pin<Box<dyn Future<Output = Result<Counts, String>> + Send + 'a>>;

/// Counters several gateways share. `add` adds to a window's counters atomically (creating the
/// window at zero) and returns the totals after the addition.
pub trait LimitStore: Send + Sync + 'static {
    fn add<'a>(&'a self, key: &'a WindowKey, add: Counts) -> LimitFuture<'a>;
}

/// A [`LimitStore`] in memory: for tests (two gateways in one process sharing it).
#[derive(Debug, Default)]
pub struct MemoryLimitStore {
    windows: Mutex<HashMap<WindowKey, Counts>>,
}

impl MemoryLimitStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl LimitStore for MemoryLimitStore {
    fn add<'a>(&'a self, key: &'a WindowKey, add: Counts) -> LimitFuture<'a> {
        Box::pin(async move {
            let mut w = self.windows.lock().map_err(|_| "poisoned".to_string())?;
            let c = w.entry(key.clone()).or_default();
            c.requests += add.requests;
            c.tokens += add.tokens;
            c.spend += add.spend;
            Ok(*c)
        })
    }
}

/// Request admissions reserved from a shared counter at once for a limit of `max` requests.
pub fn request_chunk(max: u64) -> u64 {
    (max / 50).clamp(1, 1000)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    requests: u64,
    tokens: u64,
    spend: f64,
}

impl Window {
    fn new(start: Instant) -> Self {
        Window {
            start,
            requests: 0,
            tokens: 0,
            spend: 0.0,
        }
    }
}

/// This gateway's view of one shared window.
#[derive(Debug, Clone, Copy, Default)]
struct SharedWindow {
    /// Unix seconds the window starts.
    start: i64,
    /// Admissions reserved and not used yet.
    granted: u64,
    /// The shared counter reached the request limit.
    exhausted: bool,
    /// Totals of every gateway at the last exchange.
    seen: Counts,
    /// Tokens and spend of this gateway not sent yet.
    pending_tokens: u64,
    pending_spend: f64,
}

impl SharedWindow {
    fn new(start: i64) -> Self {
        SharedWindow {
            start,
            ..Default::default()
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Spend,
}

impl LimitKind {
    /// The OpenAI error `type` of the 429.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Spend => "spend",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    /// Which limit was reached.
    pub kind: LimitKind,
    /// Seconds until the window ends.
    pub retry_after: u64,
}

struct Shared {
    store: Arc<dyn LimitStore>,
    deployment: String,
    /// One map per limit: subject → its window.
    state: Mutex<Vec<HashMap<String, SharedWindow>>>,
    /// One reservation round trip at a time.
    refill: tokio::sync::Mutex<()>,
}

/// One deployment's limits.
pub struct Limiter {
    limits: Vec<LimitSpec>,
    pricing: Option<PricingSpec>,
    /// One map per limit: subject (team or key id) → its current window.
    state: Mutex<Vec<HashMap<String, Window>>>,
    shared: Option<Shared>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

fn subject(scope: LimitScope, id: &Identity) -> &str {
    match scope {
        LimitScope::Team => &id.team,
        LimitScope::Key => &id.key_id,
    }
}

fn scope_name(scope: LimitScope) -> &'static str {
    match scope {
        LimitScope::Team => "team",
        LimitScope::Key => "key",
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What to do after looking at the shared windows.
enum Step {
    Admitted,
    Refused(Refusal),
    /// Limit `i` has no reserved admission left for the subject: reserve more, then look again.
    Refill(usize, i64),
}

impl Limiter {
    pub fn new(limits: Vec<LimitSpec>, pricing: Option<PricingSpec>) -> Self {
        let maps = limits.iter().map(|_| HashMap::new()).collect();
        Limiter {
            limits,
            pricing,
            state: Mutex::new(maps),
            shared: None,
        }
    }

    /// Shares the windows of `deployment`'s limits through `store` (see the module docs).
    pub fn with_store(mut self, deployment: &str, store: Option<Arc<dyn LimitStore>>) -> Self {
        if let Some(store) = store
            && !self.limits.is_empty()
        {
            self.shared = Some(Shared {
                store,
                deployment: deployment.to_owned(),
                state: Mutex::new(self.limits.iter().map(|_| HashMap::new()).collect()),
                refill: tokio::sync::Mutex::new(()),
            });
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    fn refusal(
        &self,
        l: &LimitSpec,
        kind: LimitKind,
        who: &str,
        deployment: &str,
        retry_after: u64,
    ) -> Refusal {
        let scope = scope_name(l.scope);
        let what = match (kind, &self.pricing) {
            (LimitKind::Requests, _) => format!(
                "Rate limit reached for {scope} `{who}` on deployment `{deployment}`: {} requests",
                l.requests.unwrap_or(0)
            ),
            (LimitKind::Tokens, _) => format!(
                "Token limit reached for {scope} `{who}` on deployment `{deployment}`: {} tokens",
                l.tokens.unwrap_or(0)
            ),
            (LimitKind::Spend, p) => format!(
                "Spend limit reached for {scope} `{who}` on deployment `{deployment}`: {} {}",
                l.spend.unwrap_or(0.0),
                p.as_ref().map_or("", |p| p.currency.as_str())
            ),
        };
        Refusal {
            message: format!(
                "{what} per {}s. Retry after {retry_after}s.",
                l.window_seconds
            ),
            kind,
            retry_after,
        }
    }

    /// Admits the request (counting it against every limit) or says why not.
    pub async fn admit(&self, id: &Identity, deployment: &str) -> Result<(), Refusal> {
        if self.limits.is_empty() {
            return Ok(());
        }
        match &self.shared {
            None => self.admit_local(id, deployment),
            Some(sh) => self.admit_shared(sh, id, deployment).await,
        }
    }

    fn admit_local(&self, id: &Identity, deployment: &str) -> Result<(), Refusal> {
        let Ok(mut st) = self.state.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        for (i, l) in self.limits.iter().enumerate() {
            let len = Duration::from_secs(l.window_seconds);
            let who = subject(l.scope, id);
            let Some(map) = st.get_mut(i) else {
                continue;
            };
            if !map.contains_key(who) {
                map.insert(who.to_owned(), Window::new(now));
            }
            let Some(w) = map.get_mut(who) else {
                continue;
            };
            if now.duration_since(w.start) >= len {
                *w = Window::new(now);
            }
            let retry_after = (len.saturating_sub(now.duration_since(w.start)))
                .as_secs_f64()
                .ceil() as u64;
            if let Some(max) = l.requests
                && w.requests >= max
            {
                return Err(self.refusal(l, LimitKind::Requests, who, deployment, retry_after));
            }
            if let Some(max) = l.tokens
                && w.tokens >= max
            {
                return Err(self.refusal(l, LimitKind::Tokens, who, deployment, retry_after));
            }
            if let (Some(max), Some(_)) = (l.spend, &self.pricing)
                && w.spend >= max
            {
                return Err(self.refusal(l, LimitKind::Spend, who, deployment, retry_after));
            }
        }
        for (l, map) in self.limits.iter().zip(st.iter_mut()) {
            if let Some(w) = map.get_mut(subject(l.scope, id)) {
                w.requests += 1;
            }
        }
        Ok(())
    }

    /// One look at the shared windows: refuse, admit (taking one reserved admission from each
    /// request limit), or ask for a refill.
    fn shared_step(&self, sh: &Shared, id: &Identity, deployment: &str, now: f64) -> Step {
        let Ok(mut st) = sh.state.lock() else {
            return Step::Admitted;
        };
        for (i, l) in self.limits.iter().enumerate() {
            let Some(map) = st.get_mut(i) else {
                continue;
            };
            let len = l.window_seconds.max(1) as i64;
            let start = (now as i64).div_euclid(len) * len;
            let who = subject(l.scope, id);
            if !map.contains_key(who) {
                map.insert(who.to_owned(), SharedWindow::new(start));
            }
            let Some(w) = map.get_mut(who) else {
                continue;
            };
            if w.start != start {
                *w = SharedWindow::new(start);
            }
            let retry_after = ((start + len) as f64 - now).ceil().max(1.0) as u64;
            if l.requests.is_some() && w.granted == 0 {
                if w.exhausted {
                    return Step::Refused(self.refusal(
                        l,
                        LimitKind::Requests,
                        who,
                        deployment,
                        retry_after,
                    ));
                }
                return Step::Refill(i, start);
            }
            if let Some(max) = l.tokens
                && w.seen.tokens + w.pending_tokens >= max
            {
                return Step::Refused(self.refusal(
                    l,
                    LimitKind::Tokens,
                    who,
                    deployment,
                    retry_after,
                ));
            }
            if let (Some(max), Some(_)) = (l.spend, &self.pricing)
                && w.seen.spend + w.pending_spend >= max
            {
                return Step::Refused(self.refusal(
                    l,
                    LimitKind::Spend,
                    who,
                    deployment,
                    retry_after,
                ));
            }
        }
        for (l, map) in self.limits.iter().zip(st.iter_mut()) {
            if l.requests.is_some()
                && let Some(w) = map.get_mut(subject(l.scope, id))
            {
                w.granted = w.granted.saturating_sub(1);
            }
        }
        Step::Admitted
    }

    async fn admit_shared(
        &self,
        sh: &Shared,
        id: &Identity,
        deployment: &str,
    ) -> Result<(), Refusal> {
        // Each round either decides or reserves admissions; a round that reserved and lost them
        // to concurrent requests looks again. After many rounds, admit (never stall a request).
        for _ in 0..64 {
            let (i, start) = match self.shared_step(sh, id, deployment, unix_now()) {
                Step::Admitted => return Ok(()),
                Step::Refused(r) => return Err(r),
                Step::Refill(i, start) => (i, start),
            };
            let Some(l) = self.limits.get(i) else {
                return Ok(());
            };
            let who = subject(l.scope, id);
            let _one = sh.refill.lock().await;
            // Another request may have refilled while this one waited.
            let needed = sh.state.lock().ok().is_some_and(|st| {
                st.get(i)
                    .and_then(|m| m.get(who))
                    .is_some_and(|w| w.start == start && w.granted == 0 && !w.exhausted)
            });
            if !needed {
                continue;
            }
            let max = l.requests.unwrap_or(0);
            let chunk = request_chunk(max);
            let key = window_key(&sh.deployment, i, l, who, start);
            let result = sh
                .store
                .add(
                    &key,
                    Counts {
                        requests: chunk,
                        ..Default::default()
                    },
                )
                .await;
            let Ok(mut st) = sh.state.lock() else {
                return Ok(());
            };
            let Some(w) = st.get_mut(i).and_then(|m| m.get_mut(who)) else {
                continue;
            };
            if w.start != start {
                continue;
            }
            match result {
                Ok(total) => {
                    // `total.requests - chunk` were reserved before this call.
                    let before = total.requests.saturating_sub(chunk);
                    let granted = max.saturating_sub(before).min(chunk);
                    w.granted += granted;
                    w.exhausted = granted < chunk;
                    w.seen = total;
                }
                Err(e) => {
                    tracing::warn!(deployment = %sh.deployment, error = %e, "gateway limits: shared counters unreachable; admitting on this gateway's own count");
                    w.granted += chunk;
                }
            }
        }
        Ok(())
    }

    /// Counts the tokens a finished request used, and their cost at the deployment's prices.
    pub fn add_tokens(&self, id: &Identity, tokens_in: u64, tokens_out: u64) {
        let tokens = tokens_in + tokens_out;
        if self.limits.is_empty() || tokens == 0 {
            return;
        }
        let spend = self
            .pricing
            .as_ref()
            .map_or(0.0, |p| p.cost(tokens_in, tokens_out));
        if let Some(sh) = &self.shared {
            let Ok(mut st) = sh.state.lock() else {
                return;
            };
            for (l, map) in self.limits.iter().zip(st.iter_mut()) {
                if (l.tokens.is_some() || l.spend.is_some())
                    && let Some(w) = map.get_mut(subject(l.scope, id))
                {
                    w.pending_tokens += tokens;
                    w.pending_spend += spend;
                }
            }
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        for (l, map) in self.limits.iter().zip(st.iter_mut()) {
            if (l.tokens.is_some() || l.spend.is_some())
                && let Some(w) = map.get_mut(subject(l.scope, id))
            {
                w.tokens += tokens;
                w.spend += spend;
            }
        }
    }

    /// Sends this gateway's token and spend counts to the shared store and reads every
    /// gateway's totals back; forgets windows that ended. Called every [`SHARED_SYNC`].
    pub async fn sync(&self) {
        let Some(sh) = &self.shared else {
            return;
        };
        let now = unix_now();
        // Take what is pending, per window with a token or spend limit.
        let mut work = Vec::new();
        if let Ok(mut st) = sh.state.lock() {
            for (i, (l, map)) in self.limits.iter().zip(st.iter_mut()).enumerate() {
                let len = l.window_seconds.max(1) as i64;
                map.retain(|_, w| ((w.start + len) as f64) > now);
                if l.tokens.is_none() && l.spend.is_none() {
                    continue;
                }
                for (who, w) in map.iter_mut() {
                    let add = Counts {
                        requests: 0,
                        tokens: std::mem::take(&mut w.pending_tokens),
                        spend: std::mem::take(&mut w.pending_spend),
                    };
                    work.push((i, who.clone(), w.start, add));
                }
            }
        }
        for (i, who, start, add) in work {
            let Some(l) = self.limits.get(i) else {
                continue;
            };
            let key = window_key(&sh.deployment, i, l, &who, start);
            let result = sh.store.add(&key, add).await;
            let Ok(mut st) = sh.state.lock() else {
                return;
            };
            let Some(w) = st.get_mut(i).and_then(|m| m.get_mut(&who)) else {
                continue;
            };
            if w.start != start {
                continue;
            }
            match result {
                Ok(total) => w.seen = total,
                Err(e) => {
                    tracing::warn!(deployment = %sh.deployment, error = %e, "gateway limits: cannot share token counts yet");
                    w.pending_tokens += add.tokens;
                    w.pending_spend += add.spend;
                }
            }
        }
    }
}

fn window_key(deployment: &str, i: usize, l: &LimitSpec, who: &str, start: i64) -> WindowKey {
    let len = l.window_seconds.max(1) as i64;
    WindowKey {
        deployment: deployment.to_owned(),
        limit: format!("{i}:{}:{}", scope_name(l.scope), l.window_seconds),
        subject: who.to_owned(),
        window_start: start,
        window_end: start + len,
    }
}

/// Runs [`Limiter::sync`] of every deployment every [`SHARED_SYNC`] until the gateway is gone.
pub(crate) fn spawn_sync(inner: Weak<crate::Inner>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("gateway limits: no async runtime; shared token counts are not exchanged");
        return;
    };
    rt.spawn(async move {
        loop {
            tokio::time::sleep(SHARED_SYNC).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let cfg = match inner.config.read() {
                Ok(g) => Arc::clone(&g),
                Err(p) => Arc::clone(&p.into_inner()),
            };
            drop(inner);
            for d in &cfg.deployments {
                d.limiter.sync().await;
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn adm(l: &Limiter, id: &Identity, d: &str) -> Result<(), Refusal> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(l.admit(id, d))
    }

    fn id(team: &str, key: &str) -> Identity {
        Identity {
            team: team.into(),
            key_id: key.into(),
        }
    }

    #[test]
    fn request_limit_per_team_and_key() {
        let l = Limiter::new(
            vec![
                LimitSpec {
                    scope: LimitScope::Team,
                    window_seconds: 60,
                    requests: Some(3),
                    tokens: None,
                    spend: None,
                },
                LimitSpec {
                    scope: LimitScope::Key,
                    window_seconds: 60,
                    requests: Some(2),
                    tokens: None,
                    spend: None,
                },
            ],
            None,
        );
        let a1 = id("a", "k1");
        let a2 = id("a", "k2");
        assert!(adm(&l, &a1, "d").is_ok());
        assert!(adm(&l, &a1, "d").is_ok());
        let r = adm(&l, &a1, "d").expect_err("key limit");
        assert!(r.message.contains("key `k1`"), "{}", r.message);
        assert!(r.retry_after >= 59 && r.retry_after <= 60);
        assert!(adm(&l, &a2, "d").is_ok(), "team has one request left");
        let r = adm(&l, &a2, "d").expect_err("team limit");
        assert!(r.message.contains("team `a`"), "{}", r.message);
        assert!(
            adm(&l, &id("b", "k3"), "d").is_ok(),
            "other team unaffected"
        );
    }

    #[test]
    fn token_limit_and_window_reset() {
        let l = Limiter::new(
            vec![LimitSpec {
                scope: LimitScope::Key,
                window_seconds: 1,
                requests: None,
                tokens: Some(100),
                spend: None,
            }],
            None,
        );
        let a = id("a", "k");
        assert!(adm(&l, &a, "d").is_ok());
        l.add_tokens(&a, 100, 50);
        let r = adm(&l, &a, "d").expect_err("tokens spent");
        assert_eq!(r.kind, LimitKind::Tokens);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(adm(&l, &a, "d").is_ok(), "new window");
    }

    #[test]
    fn spend_limit_counts_tokens_at_the_deployment_prices() {
        let pricing = PricingSpec {
            input_per_1k_tokens: 0.5,
            output_per_1k_tokens: 1.5,
            currency: "EUR".into(),
        };
        let l = Limiter::new(
            vec![LimitSpec {
                scope: LimitScope::Team,
                window_seconds: 60,
                requests: None,
                tokens: None,
                spend: Some(5.0),
            }],
            Some(pricing),
        );
        let a = id("a", "k");
        // 1,000 input and 1,000 output tokens cost 0.5 + 1.5 = 2 a request.
        for _ in 0..2 {
            assert!(adm(&l, &a, "d").is_ok());
            l.add_tokens(&a, 1000, 1000);
        }
        assert!(adm(&l, &a, "d").is_ok(), "4 of 5 spent");
        l.add_tokens(&a, 1000, 1000);
        let r = adm(&l, &a, "d").expect_err("6 of 5 spent");
        assert_eq!(r.kind, LimitKind::Spend);
        assert!(r.message.contains("5 EUR per 60s"), "{}", r.message);
        assert!(
            adm(&l, &id("b", "k2"), "d").is_ok(),
            "other team unaffected"
        );
    }

    fn requests(scope: LimitScope, window_seconds: u64, n: u64) -> LimitSpec {
        LimitSpec {
            scope,
            window_seconds,
            requests: Some(n),
            tokens: None,
            spend: None,
        }
    }

    #[test]
    fn chunks_are_two_percent_of_the_limit_within_1_and_1000() {
        assert_eq!(request_chunk(1), 1);
        assert_eq!(request_chunk(99), 1);
        assert_eq!(request_chunk(600), 12);
        assert_eq!(request_chunk(1_000_000), 1000);
    }

    #[tokio::test]
    async fn two_gateways_sharing_a_store_admit_the_limit_together() {
        let store: Arc<dyn LimitStore> = Arc::new(MemoryLimitStore::new());
        // Two limiters = two gateways. A day window: the test does not straddle its end.
        let mk = || {
            Limiter::new(vec![requests(LimitScope::Team, 86_400, 10)], None)
                .with_store("chat", Some(Arc::clone(&store)))
        };
        let (a, b) = (mk(), mk());
        let who = id("t", "k");
        let mut admitted = 0;
        let mut refused = Vec::new();
        for n in 0..20 {
            let g = if n % 2 == 0 { &a } else { &b };
            match g.admit(&who, "chat").await {
                Ok(()) => admitted += 1,
                Err(r) => refused.push(r),
            }
        }
        // Chunks of 1 for a limit of 10: exactly the limit, whichever gateway asked.
        assert_eq!(admitted, 10);
        assert_eq!(refused.len(), 10);
        assert!(refused.iter().all(|r| r.kind == LimitKind::Requests
            && r.retry_after >= 1
            && r.retry_after <= 86_400));
        assert!(
            refused[0].message.contains("10 requests per 86400s"),
            "{}",
            refused[0].message
        );
        // Another team has its own window.
        assert!(a.admit(&id("u", "k2"), "chat").await.is_ok());
    }

    #[tokio::test]
    async fn big_limits_reserve_chunks_and_never_admit_more_than_the_limit() {
        let store: Arc<dyn LimitStore> = Arc::new(MemoryLimitStore::new());
        let mk = || {
            Limiter::new(vec![requests(LimitScope::Key, 86_400, 500)], None)
                .with_store("chat", Some(Arc::clone(&store)))
        };
        let (a, b, c) = (mk(), mk(), mk());
        let who = id("t", "k");
        let mut admitted = 0;
        // Gateway a takes most traffic; b and c each hold an unused part of a chunk of 10.
        for n in 0..1000 {
            let g = match n % 10 {
                0 => &b,
                1 => &c,
                _ => &a,
            };
            if g.admit(&who, "chat").await.is_ok() {
                admitted += 1;
            }
        }
        assert!(admitted <= 500, "{admitted}");
        assert!(admitted >= 500 - 3 * 10, "{admitted}");
    }

    #[tokio::test]
    async fn token_counts_reach_the_other_gateway_at_the_next_sync() {
        let store: Arc<dyn LimitStore> = Arc::new(MemoryLimitStore::new());
        let mk = || {
            Limiter::new(
                vec![LimitSpec {
                    scope: LimitScope::Team,
                    window_seconds: 86_400,
                    requests: None,
                    tokens: Some(100),
                    spend: None,
                }],
                None,
            )
            .with_store("chat", Some(Arc::clone(&store)))
        };
        let (a, b) = (mk(), mk());
        let who = id("t", "k");
        assert!(a.admit(&who, "chat").await.is_ok());
        assert!(b.admit(&who, "chat").await.is_ok());
        a.add_tokens(&who, 60, 0);
        b.add_tokens(&who, 30, 20);
        // Each has seen only its own tokens so far (60 and 50 of 100).
        assert!(a.admit(&who, "chat").await.is_ok());
        assert!(b.admit(&who, "chat").await.is_ok());
        a.sync().await;
        b.sync().await;
        // b has seen 60 + 50 = 110; a saw only its own 60 at its sync.
        let r = b.admit(&who, "chat").await.expect_err("110 of 100 tokens");
        assert_eq!(r.kind, LimitKind::Tokens);
        assert!(a.admit(&who, "chat").await.is_ok());
        a.sync().await;
        assert!(a.admit(&who, "chat").await.is_err(), "a sees 110 too");
    }

    /// A store that always fails: the gateway keeps admitting on its own.
    struct Down;
    impl LimitStore for Down {
        fn add<'a>(&'a self, _key: &'a WindowKey, _add: Counts) -> LimitFuture<'a> {
            Box::pin(async { Err("connection refused".to_string()) })
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_does_not_refuse_requests() {
        let l = Limiter::new(vec![requests(LimitScope::Team, 60, 3)], None)
            .with_store("chat", Some(Arc::new(Down)));
        for _ in 0..5 {
            assert!(l.admit(&id("t", "k"), "chat").await.is_ok());
        }
    }
}
