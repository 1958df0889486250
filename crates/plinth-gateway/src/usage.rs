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

/// Hands records over in batches: the request path appends to a bounded queue (a full queue
/// drops the record, counted by [`ChannelSink::dropped`], rather than slowing requests down)
/// and never wakes the consumer, which takes everything queued every few milliseconds with
/// [`UsageReceiver`]. A wake-up per request would cost a futex call on the request path and a
/// context switch of the consumer, which at tens of thousands of requests a second is a
/// measurable share of the gateway's CPU.
#[derive(Debug)]
pub struct ChannelSink {
    shared: std::sync::Arc<Queue>,
}

#[derive(Debug)]
struct Queue {
    records: Mutex<Vec<UsageRecord>>,
    capacity: usize,
    dropped: std::sync::atomic::AtomicU64,
}

/// The consuming end of a [`ChannelSink`].
#[derive(Debug)]
pub struct UsageReceiver {
    shared: std::sync::Arc<Queue>,
    idle_polls: u32,
}

/// How often an idle receiver looks for records: from 5 ms after one that found records up to
/// 25 ms after a run of empty ones.
const POLL_MIN: std::time::Duration = std::time::Duration::from_millis(5);
const POLL_MAX: std::time::Duration = std::time::Duration::from_millis(25);

impl ChannelSink {
    pub fn new(capacity: usize) -> (Self, UsageReceiver) {
        let shared = std::sync::Arc::new(Queue {
            records: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            dropped: std::sync::atomic::AtomicU64::new(0),
        });
        (
            ChannelSink {
                shared: std::sync::Arc::clone(&shared),
            },
            UsageReceiver {
                shared,
                idle_polls: 0,
            },
        )
    }

    pub fn dropped(&self) -> u64 {
        self.shared
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl UsageSink for ChannelSink {
    fn record(&self, record: UsageRecord) {
        let mut q = self
            .shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if q.len() >= self.shared.capacity {
            drop(q);
            self.shared
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        q.push(record);
    }
}

impl UsageReceiver {
    /// Everything queued now, oldest first; empty when nothing is.
    pub fn take(&mut self) -> Vec<UsageRecord> {
        std::mem::take(
            &mut *self
                .shared
                .records
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Whether every sink is gone (nothing more can come once the queue is empty).
    fn closed(&self) -> bool {
        std::sync::Arc::strong_count(&self.shared) == 1
    }

    /// How long to wait before looking again after an empty look.
    fn backoff(&mut self) -> std::time::Duration {
        self.idle_polls = self.idle_polls.saturating_add(1);
        (POLL_MIN * self.idle_polls).min(POLL_MAX)
    }

    /// One look: the records queued (`Ok(Some)`), nothing more to come (`Ok(None)`), or how
    /// long to wait before the next look (`Err`).
    fn look(&mut self) -> Result<Option<Vec<UsageRecord>>, std::time::Duration> {
        // Closed is read before taking: a sink gone by then has queued all it ever will.
        let closed = self.closed();
        let batch = self.take();
        if !batch.is_empty() {
            self.idle_polls = 0;
            Ok(Some(batch))
        } else if closed {
            Ok(None)
        } else {
            Err(self.backoff())
        }
    }

    /// Waits for records and returns all that are queued; `None` once every sink is dropped and
    /// everything was taken.
    pub async fn recv_batch(&mut self) -> Option<Vec<UsageRecord>> {
        loop {
            match self.look() {
                Ok(got) => return got,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// [`UsageReceiver::recv_batch`] for a plain thread.
    pub fn blocking_recv_batch(&mut self) -> Option<Vec<UsageRecord>> {
        loop {
            match self.look() {
                Ok(got) => return got,
                Err(wait) => std::thread::sleep(wait),
            }
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
        let got: Vec<u64> = rx.take().iter().map(|r| r.tokens_in).collect();
        assert_eq!(got, [0, 1]);
        assert!(rx.take().is_empty());
        // Room again once taken.
        sink.record(rec(7));
        assert_eq!(rx.take().len(), 1);
    }

    #[test]
    fn a_receiver_gets_batches_until_every_sink_is_gone() {
        let (sink, mut rx) = ChannelSink::new(100);
        let writer = std::thread::spawn(move || {
            for n in 0..10 {
                sink.record(rec(n));
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let mut got = Vec::new();
        while let Some(batch) = rx.blocking_recv_batch() {
            got.extend(batch.into_iter().map(|r| r.tokens_in));
        }
        writer.join().unwrap();
        assert_eq!(got, (0..10).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn the_async_receiver_ends_with_the_sink_after_the_last_batch() {
        let (sink, mut rx) = ChannelSink::new(100);
        sink.record(rec(1));
        sink.record(rec(2));
        drop(sink);
        let batch = rx.recv_batch().await.expect("the queued records");
        assert_eq!(batch.len(), 2);
        assert!(rx.recv_batch().await.is_none());
    }
}
