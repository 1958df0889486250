//! Fixed-window request and token limits per team or per key, kept in process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Identity;
use crate::spec::{LimitScope, LimitSpec};

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    requests: u64,
    tokens: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    /// True when the token limit (not the request limit) was reached.
    pub tokens: bool,
    /// Seconds until the window ends.
    pub retry_after: u64,
}

/// One deployment's limits.
#[derive(Debug)]
pub struct Limiter {
    limits: Vec<LimitSpec>,
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
    pub fn new(limits: Vec<LimitSpec>) -> Self {
        let maps = limits.iter().map(|_| HashMap::new()).collect();
        Limiter {
            limits,
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
                map.insert(
                    who.to_owned(),
                    Window {
                        start: now,
                        requests: 0,
                        tokens: 0,
                    },
                );
            }
            let Some(w) = map.get_mut(who) else {
                continue;
            };
            if now.duration_since(w.start) >= len {
                *w = Window {
                    start: now,
                    requests: 0,
                    tokens: 0,
                };
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
                    tokens: false,
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
                    tokens: true,
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

    /// Counts tokens a finished request used.
    pub fn add_tokens(&self, id: &Identity, tokens: u64) {
        if self.limits.is_empty() || tokens == 0 {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        for (l, map) in self.limits.iter().zip(st.iter_mut()) {
            if l.tokens.is_some()
                && let Some(w) = map.get_mut(subject(l.scope, id))
            {
                w.tokens += tokens;
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
        let l = Limiter::new(vec![
            LimitSpec {
                scope: LimitScope::Team,
                window_seconds: 60,
                requests: Some(3),
                tokens: None,
            },
            LimitSpec {
                scope: LimitScope::Key,
                window_seconds: 60,
                requests: Some(2),
                tokens: None,
            },
        ]);
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
        let l = Limiter::new(vec![LimitSpec {
            scope: LimitScope::Key,
            window_seconds: 1,
            requests: None,
            tokens: Some(100),
        }]);
        let a = id("a", "k");
        assert!(l.admit(&a, "d").is_ok());
        l.add_tokens(&a, 150);
        let r = l.admit(&a, "d").expect_err("tokens spent");
        assert!(r.tokens);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(l.admit(&a, "d").is_ok(), "new window");
    }
}
