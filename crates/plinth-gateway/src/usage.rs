//! Usage records (one per request, for the cost engine) and canary rollback events.

use std::sync::Mutex;

/// What one request through the gateway used. Token counts come from the upstream's `usage`.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// Milliseconds since the Unix epoch when the request arrived.
    pub at_unix_ms: u64,
    pub team: String,
    pub key_id: String,
    /// Deployment the client addressed.
    pub deployment: String,
    /// Deployment that answered (differs from `deployment` when a fallback deployment served).
    pub served_by: String,
    /// Version that answered (empty when no upstream answered).
    pub version: String,
    /// OpenAI operation: `chat`, `text_completion`, `embeddings` or `predict`.
    pub operation: &'static str,
    /// The `model` the client asked for (empty for `predict`).
    pub model: String,
    /// HTTP status returned to the client.
    pub status: u16,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// What the tokens cost at the deployment's `pricing` (0 without pricing, and for cache hits).
    pub cost: f64,
    /// ISO 4217 code of `cost`: the `pricing` currency; empty without pricing.
    pub currency: String,
    /// Seconds from request arrival until the response was ready (headers, for streams).
    pub total_seconds: f64,
    /// Seconds spent waiting on upstreams, all attempts together.
    pub upstream_seconds: f64,
    pub cache_hit: bool,
    /// Whether another version or deployment than the first choice served the request.
    pub fallback_used: bool,
    pub stream: bool,
    /// For streams: whether the stream ended cleanly (false when the upstream broke off or the
    /// client went away).
    pub completed: bool,
}

/// Receives usage records. Called on the request path: must not block.
pub trait UsageSink: Send + Sync + 'static {
    fn record(&self, record: UsageRecord);
}

/// Drops every record (the builder's default until a sink is given).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl UsageSink for NullSink {
    fn record(&self, _record: UsageRecord) {}
}

/// Keeps every record in memory, without bound: for tests.
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<UsageRecord>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The records so far.
    pub fn records(&self) -> Vec<UsageRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl UsageSink for MemorySink {
    fn record(&self, record: UsageRecord) {
        if let Ok(mut r) = self.records.lock() {
            r.push(record);
        }
    }
}

/// Sends records into a bounded tokio channel; a full channel drops the record (counted by
/// [`ChannelSink::dropped`]) rather than slowing requests down.
#[derive(Debug)]
pub struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<UsageRecord>,
    dropped: std::sync::atomic::AtomicU64,
}

impl ChannelSink {
    pub fn new(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<UsageRecord>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            ChannelSink {
                tx,
                dropped: std::sync::atomic::AtomicU64::new(0),
            },
            rx,
        )
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl UsageSink for ChannelSink {
    fn record(&self, record: UsageRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A canary that was rolled back automatically.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackEvent {
    pub deployment: String,
    pub canary_version: String,
    /// Human-readable reason, with the measured numbers.
    pub reason: String,
    pub canary_requests: u64,
    pub canary_error_rate: f64,
    pub stable_error_rate: f64,
    pub canary_p95_ms: f64,
    pub stable_p95_ms: f64,
}

/// Told when a canary is rolled back (the server audits it). Must not block.
pub trait CanaryEvents: Send + Sync + 'static {
    fn rolled_back(&self, event: RollbackEvent);
}

/// Keeps rollback events in memory.
#[derive(Debug, Default)]
pub struct MemoryEvents {
    events: Mutex<Vec<RollbackEvent>>,
}

impl MemoryEvents {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events(&self) -> Vec<RollbackEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl CanaryEvents for MemoryEvents {
    fn rolled_back(&self, event: RollbackEvent) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rec(n: u64) -> UsageRecord {
        UsageRecord {
            at_unix_ms: n,
            team: "t".into(),
            key_id: "k".into(),
            deployment: "d".into(),
            served_by: "d".into(),
            version: "v1".into(),
            operation: "chat",
            model: "m".into(),
            status: 200,
            tokens_in: n,
            tokens_out: 1,
            cost: 0.0,
            currency: String::new(),
            total_seconds: 0.1,
            upstream_seconds: 0.09,
            cache_hit: false,
            fallback_used: false,
            stream: false,
            completed: true,
        }
    }

    #[test]
    fn channel_sink_drops_when_full_instead_of_blocking() {
        let (sink, mut rx) = ChannelSink::new(2);
        for n in 0..5 {
            sink.record(rec(n));
        }
        assert_eq!(sink.dropped(), 3);
        assert_eq!(rx.try_recv().expect("first").tokens_in, 0);
        assert_eq!(rx.try_recv().expect("second").tokens_in, 1);
        assert!(rx.try_recv().is_err());
    }
}
