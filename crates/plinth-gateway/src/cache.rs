//! Exact-match response cache: key = deployment + version + path + canonical request body
//! (object keys sorted), TTL per entry, a byte limit with oldest-first eviction.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

/// A cached response body.
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Bytes,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    inserted: Instant,
    size: u64,
}

#[derive(Debug, Default)]
struct State {
    map: HashMap<String, Entry>,
    order: VecDeque<(String, Instant)>,
    bytes: u64,
}

/// One deployment's cache.
#[derive(Debug)]
pub struct ResponseCache {
    ttl: Duration,
    max_bytes: u64,
    state: Mutex<State>,
}

/// Writes `v` as JSON with object keys in sorted order, so equal requests give equal keys.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The cache key of a request.
pub fn cache_key(deployment: &str, version: &str, path: &str, body: &Value) -> String {
    let mut k = String::with_capacity(256);
    k.push_str(deployment);
    k.push('\u{0}');
    k.push_str(version);
    k.push('\u{0}');
    k.push_str(path);
    k.push('\u{0}');
    canonical_json(body, &mut k);
    k
}

impl ResponseCache {
    pub fn new(ttl: Duration, max_bytes: u64) -> Self {
        ResponseCache {
            ttl,
            max_bytes,
            state: Mutex::new(State::default()),
        }
    }

    /// A fresh entry for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Cached> {
        let mut st = self.state.lock().ok()?;
        let fresh = st.map.get(key).map(|e| e.inserted.elapsed() < self.ttl)?;
        if fresh {
            return st.map.get(key).map(|e| e.value.clone());
        }
        if let Some(e) = st.map.remove(key) {
            st.bytes -= e.size;
        }
        None
    }

    /// Stores `value`; entries larger than the whole cache are not stored.
    pub fn put(&self, key: String, value: Cached) {
        let size = (key.len() + value.body.len()) as u64;
        if size > self.max_bytes {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        if let Some(old) = st.map.remove(&key) {
            st.bytes -= old.size;
        }
        while st.bytes + size > self.max_bytes {
            let Some((k, at)) = st.order.pop_front() else {
                break;
            };
            if st.map.get(&k).is_some_and(|e| e.inserted == at)
                && let Some(e) = st.map.remove(&k)
            {
                st.bytes -= e.size;
            }
        }
        st.order.push_back((key.clone(), now));
        st.map.insert(
            key,
            Entry {
                value,
                inserted: now,
                size,
            },
        );
        st.bytes += size;
        // Drop stale order entries so the queue cannot grow without bound.
        if st.order.len() > 2 * st.map.len() + 16 {
            let State { map, order, .. } = &mut *st;
            order.retain(|(k, at)| map.get(k).is_some_and(|e| e.inserted == *at));
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.state.lock().map(|s| s.bytes).unwrap_or(0)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn val(n: usize) -> Cached {
        Cached {
            body: Bytes::from(vec![b'x'; n]),
            tokens_in: 1,
            tokens_out: 2,
        }
    }

    #[test]
    fn canonical_keys_ignore_object_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[2,1]},"b":1}"#).unwrap();
        assert_eq!(cache_key("d", "v", "/p", &a), cache_key("d", "v", "/p", &b));
        assert_ne!(cache_key("d", "v", "/p", &a), cache_key("d", "v", "/p", &c));
        assert_ne!(
            cache_key("d", "v1", "/p", &a),
            cache_key("d", "v2", "/p", &a)
        );
    }

    #[test]
    fn evicts_oldest_to_stay_under_the_byte_limit() {
        let c = ResponseCache::new(Duration::from_secs(60), 300);
        c.put("k1".into(), val(100));
        c.put("k2".into(), val(100));
        assert_eq!(c.len(), 2);
        c.put("k3".into(), val(100));
        assert!(c.bytes() <= 300, "bytes {}", c.bytes());
        assert!(c.get("k1").is_none(), "oldest entry evicted");
        assert!(c.get("k3").is_some());
        c.put("huge".into(), val(1000));
        assert!(c.get("huge").is_none(), "larger than the cache: not stored");
    }

    #[test]
    fn entries_expire() {
        let c = ResponseCache::new(Duration::from_millis(30), 10_000);
        c.put("k".into(), val(10));
        assert!(c.get("k").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("k").is_none());
        assert_eq!(c.bytes(), 0);
    }
}
