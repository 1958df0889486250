//! Fixed-window request, token and spend limits per team or per key, kept in process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Identity;
use crate::spec::{LimitScope, LimitSpec, PricingSpec};

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

/// One deployment's limits.
#[derive(Debug)]
pub struct Limiter {
    limits: Vec<LimitSpec>,
    pricing: Option<PricingSpec>,
    /// One map per limit: subject (team or key id) → its current window.
    state: Mutex<Vec<HashMap<String, Window>>>,
}

fn subject(scope: LimitScope, id: &Identity) -> &str {
    match scope {
        LimitScope::Team => &id.team,
        LimitScope::Key => &id.key_id,
    }
}

impl Limiter {
    pub fn new(limits: Vec<LimitSpec>, pricing: Option<PricingSpec>) -> Self {
        let maps = limits.iter().map(|_| HashMap::new()).collect();
        Limiter {
            limits,
            pricing,
            state: Mutex::new(maps),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Admits the request (counting it against every limit) or says why not.
    pub fn admit(&self, id: &Identity, deployment: &str) -> Result<(), Refusal> {
        if self.limits.is_empty() {
            return Ok(());
        }
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
            let scope = match l.scope {
                LimitScope::Team => "team",
                LimitScope::Key => "key",
            };
            if let Some(max) = l.requests
                && w.requests >= max
            {
                return Err(Refusal {
                    message: format!(
                        "Rate limit reached for {scope} `{who}` on deployment `{deployment}`: \
                         {max} requests per {}s. Retry after {retry_after}s.",
                        l.window_seconds
                    ),
                    kind: LimitKind::Requests,
                    retry_after,
                });
            }
            if let Some(max) = l.tokens
                && w.tokens >= max
            {
                return Err(Refusal {
                    message: format!(
                        "Token limit reached for {scope} `{who}` on deployment `{deployment}`: \
                         {max} tokens per {}s. Retry after {retry_after}s.",
                        l.window_seconds
                    ),
                    kind: LimitKind::Tokens,
                    retry_after,
                });
            }
            if let (Some(max), Some(p)) = (l.spend, &self.pricing)
                && w.spend >= max
            {
                return Err(Refusal {
                    message: format!(
                        "Spend limit reached for {scope} `{who}` on deployment `{deployment}`: \
                         {max} {} per {}s. Retry after {retry_after}s.",
                        p.currency, l.window_seconds
                    ),
                    kind: LimitKind::Spend,
                    retry_after,
                });
            }
        }
        for (l, map) in self.limits.iter().zip(st.iter_mut()) {
            if let Some(w) = map.get_mut(subject(l.scope, id)) {
                w.requests += 1;
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
        assert!(l.admit(&a1, "d").is_ok());
        assert!(l.admit(&a1, "d").is_ok());
        let r = l.admit(&a1, "d").expect_err("key limit");
        assert!(r.message.contains("key `k1`"), "{}", r.message);
        assert!(r.retry_after >= 59 && r.retry_after <= 60);
        assert!(l.admit(&a2, "d").is_ok(), "team has one request left");
        let r = l.admit(&a2, "d").expect_err("team limit");
        assert!(r.message.contains("team `a`"), "{}", r.message);
        assert!(
            l.admit(&id("b", "k3"), "d").is_ok(),
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
        assert!(l.admit(&a, "d").is_ok());
        l.add_tokens(&a, 100, 50);
        let r = l.admit(&a, "d").expect_err("tokens spent");
        assert_eq!(r.kind, LimitKind::Tokens);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(l.admit(&a, "d").is_ok(), "new window");
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
            assert!(l.admit(&a, "d").is_ok());
            l.add_tokens(&a, 1000, 1000);
        }
        assert!(l.admit(&a, "d").is_ok(), "4 of 5 spent");
        l.add_tokens(&a, 1000, 1000);
        let r = l.admit(&a, "d").expect_err("6 of 5 spent");
        assert_eq!(r.kind, LimitKind::Spend);
        assert!(r.message.contains("5 EUR per 60s"), "{}", r.message);
        assert!(
            l.admit(&id("b", "k2"), "d").is_ok(),
            "other team unaffected"
        );
    }
}
