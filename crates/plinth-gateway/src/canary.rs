//! Automatic canary rollback: a sliding window of outcomes per role; when the canary's error rate
//! or p95 latency is worse than stable's by more than the policy's margin (with at least
//! `minRequests` canary requests in the window), the canary's weight drops to 0.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::spec::CanaryPolicy;
use crate::usage::RollbackEvent;

/// Latency histogram: bucket `i` holds latencies up to `FIRST_MS * GROWTH^i` ms (the last one
/// everything above), so p95 is known within one bucket (20 %) at constant cost per request.
const BUCKETS: usize = 80;
const FIRST_MS: f64 = 0.05;
const GROWTH: f64 = 1.2;

fn bucket_of(latency_ms: f64) -> usize {
    if latency_ms.is_nan() || latency_ms <= FIRST_MS {
        return 0;
    }
    let i = ((latency_ms / FIRST_MS).ln() / GROWTH.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

fn bucket_bound(i: usize) -> f64 {
    FIRST_MS * GROWTH.powi(i as i32)
}

/// Counts for one second (or, as a running total, for the whole window).
#[derive(Debug, Clone)]
struct Counts {
    second: u64,
    n: u64,
    errors: u64,
    hist: [u32; BUCKETS],
}

impl Counts {
    fn new(second: u64) -> Self {
        Counts {
            second,
            n: 0,
            errors: 0,
            hist: [0; BUCKETS],
        }
    }

    fn add(&mut self, ok: bool, bucket: usize) {
        self.n += 1;
        self.errors += u64::from(!ok);
        self.hist[bucket] += 1;
    }

    fn subtract(&mut self, other: &Counts) {
        self.n -= other.n;
        self.errors -= other.errors;
        for (a, b) in self.hist.iter_mut().zip(other.hist.iter()) {
            *a -= *b;
        }
    }

    fn stats(&self) -> Stats {
        if self.n == 0 {
            return Stats {
                n: 0,
                error_rate: 0.0,
                p95_ms: 0.0,
            };
        }
        let want = ((self.n as f64) * 0.95).ceil() as u64;
        let mut seen = 0u64;
        let mut p95 = bucket_bound(BUCKETS - 1);
        for (i, c) in self.hist.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= want {
                p95 = bucket_bound(i);
                break;
            }
        }
        Stats {
            n: self.n,
            error_rate: self.errors as f64 / self.n as f64,
            p95_ms: p95,
        }
    }
}

/// A sliding window of one-second buckets plus their running total.
#[derive(Debug)]
struct Window {
    seconds: VecDeque<Counts>,
    total: Counts,
}

impl Window {
    fn new() -> Self {
        Window {
            seconds: VecDeque::new(),
            total: Counts::new(0),
        }
    }

    fn expire(&mut self, now: u64, window: u64) {
        while let Some(front) = self.seconds.front() {
            if front.second + window > now {
                break;
            }
            if let Some(old) = self.seconds.pop_front() {
                self.total.subtract(&old);
            }
        }
    }

    fn add(&mut self, now: u64, ok: bool, bucket: usize) {
        match self.seconds.back_mut() {
            Some(b) if b.second == now => b.add(ok, bucket),
            _ => {
                let mut b = Counts::new(now);
                b.add(ok, bucket);
                self.seconds.push_back(b);
            }
        }
        self.total.add(ok, bucket);
    }
}

#[derive(Debug)]
struct Samples {
    stable: Window,
    canary: Window,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: u64,
    error_rate: f64,
    p95_ms: f64,
}

/// Watches one deployment's canary.
#[derive(Debug)]
pub struct CanaryMonitor {
    deployment: String,
    canary_version: String,
    policy: CanaryPolicy,
    created: Instant,
    rolled_back: AtomicBool,
    samples: Mutex<Samples>,
}

impl CanaryMonitor {
    pub fn new(deployment: &str, canary_version: &str, policy: CanaryPolicy) -> Self {
        CanaryMonitor {
            deployment: deployment.to_owned(),
            canary_version: canary_version.to_owned(),
            policy,
            created: Instant::now(),
            rolled_back: AtomicBool::new(false),
            samples: Mutex::new(Samples {
                stable: Window::new(),
                canary: Window::new(),
            }),
        }
    }

    /// Whether the canary has been rolled back.
    pub fn rolled_back(&self) -> bool {
        self.rolled_back.load(Ordering::Relaxed)
    }

    /// Records one attempt's outcome; returns the rollback event when this sample triggered it.
    /// Constant cost: one-second buckets with running totals and a fixed latency histogram.
    pub fn record(&self, canary: bool, ok: bool, latency_ms: f64) -> Option<RollbackEvent> {
        if self.rolled_back() {
            return None;
        }
        let now = self.created.elapsed().as_secs();
        let window = self.policy.window_seconds;
        let mut s = self.samples.lock().ok()?;
        let bucket = bucket_of(latency_ms);
        if canary {
            s.canary.add(now, ok, bucket);
        } else {
            s.stable.add(now, ok, bucket);
        }
        s.canary.expire(now, window);
        s.stable.expire(now, window);
        if s.canary.total.n < self.policy.min_requests {
            return None;
        }
        let c = s.canary.total.stats();
        let st = s.stable.total.stats();
        drop(s);
        let mut reason = None;
        if c.error_rate - st.error_rate > self.policy.max_error_rate_margin {
            reason = Some(format!(
                "canary error rate {:.3} exceeds stable's {:.3} by more than {:.3} over {} requests",
                c.error_rate, st.error_rate, self.policy.max_error_rate_margin, c.n
            ));
        } else if let Some(margin) = self.policy.max_p95_latency_margin_ms
            && st.n > 0
            && c.p95_ms - st.p95_ms > margin
        {
            reason = Some(format!(
                "canary p95 latency {:.1} ms exceeds stable's {:.1} ms by more than {margin} ms over {} requests",
                c.p95_ms, st.p95_ms, c.n
            ));
        }
        let reason = reason?;
        if self.rolled_back.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(RollbackEvent {
            deployment: self.deployment.clone(),
            canary_version: self.canary_version.clone(),
            reason,
            canary_requests: c.n,
            canary_error_rate: c.error_rate,
            stable_error_rate: st.error_rate,
            canary_p95_ms: c.p95_ms,
            stable_p95_ms: st.p95_ms,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn policy(latency: Option<f64>) -> CanaryPolicy {
        CanaryPolicy {
            window_seconds: 60,
            min_requests: 10,
            max_error_rate_margin: 0.1,
            max_p95_latency_margin_ms: latency,
        }
    }

    #[test]
    fn rolls_back_on_error_rate_once_enough_requests() {
        let m = CanaryMonitor::new("d", "v2", policy(None));
        for _ in 0..50 {
            assert!(m.record(false, true, 10.0).is_none());
        }
        for i in 0..9 {
            assert!(
                m.record(true, i % 2 == 0, 10.0).is_none(),
                "below minRequests"
            );
        }
        let ev = m
            .record(true, false, 10.0)
            .expect("rollback at 10 requests");
        assert_eq!(ev.canary_version, "v2");
        assert!(ev.canary_error_rate > 0.4);
        assert!(m.rolled_back());
        assert!(m.record(true, false, 10.0).is_none(), "fires once");
    }

    #[test]
    fn healthy_canary_stays() {
        let m = CanaryMonitor::new("d", "v2", policy(Some(50.0)));
        for i in 0..200 {
            assert!(m.record(i % 10 == 0, true, 10.0 + (i % 7) as f64).is_none());
        }
        assert!(!m.rolled_back());
    }

    #[test]
    fn p95_is_within_one_bucket() {
        let mut c = Counts::new(0);
        for i in 1..=1000 {
            c.add(true, bucket_of(i as f64));
        }
        let p95 = c.stats().p95_ms;
        assert!((950.0..=950.0 * GROWTH).contains(&p95), "{p95}");
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(1e12), BUCKETS - 1);
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let mut w = Window::new();
        w.add(0, false, 3);
        w.add(0, true, 3);
        w.add(5, true, 4);
        w.expire(5, 5);
        assert_eq!((w.total.n, w.total.errors), (1, 0));
        assert_eq!(w.total.hist[3], 0);
        w.expire(10, 5);
        assert_eq!(w.total.n, 0);
    }

    #[test]
    fn rolls_back_on_p95_latency() {
        let m = CanaryMonitor::new("d", "v2", policy(Some(50.0)));
        for _ in 0..20 {
            m.record(false, true, 10.0);
        }
        let mut fired = None;
        for _ in 0..10 {
            fired = fired.or(m.record(true, true, 200.0));
        }
        let ev = fired.expect("latency rollback");
        assert!(ev.reason.contains("p95"), "{}", ev.reason);
    }
}
