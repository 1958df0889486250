//! The audit log's hash chain: canonical encoding, the event hash, and the walk that verifies a
//! stored chain.

use plinth_types::audit::{AuditEvent, AuditFilter, BadEvent};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::db::Arg;

/// `prev_hash` of the first event: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Default and largest page of [`crate::Store::list_audit`].
pub const DEFAULT_AUDIT_LIMIT: i64 = 100;
pub const MAX_AUDIT_LIMIT: i64 = 1000;

/// Rows read per query while verifying the chain.
pub(crate) const VERIFY_PAGE: i64 = 500;

/// The columns of `audit_events`, in the order the row decoder expects.
pub(crate) const EVENT_COLUMNS: &str = "seq, ts, actor, action, kind, name, team, before_digest, \
     after_digest, detail, prev_hash, hash";

/// The chain hash of an event: lowercase hex SHA-256 of the compact JSON array
/// `[seq, ts, actor, action, kind, name, team, before_digest, after_digest, detail, prev_hash]`,
/// object keys sorted at every depth. The event's own `hash` field is not part of it.
pub fn event_hash(e: &AuditEvent) -> String {
    hex::encode(Sha256::digest(canonical_event(e).as_bytes()))
}

/// [`event_hash`] with the detail given as its canonical text (`canonical_json(&e.detail)`,
/// which `e.detail` is then not read for).
pub(crate) fn event_hash_with_detail(e: &AuditEvent, detail_text: &str) -> String {
    hex::encode(Sha256::digest(
        canonical_event_with(e, |out| out.push_str(detail_text)).as_bytes(),
    ))
}

/// The exact text [`event_hash`] hashes.
pub fn canonical_event(e: &AuditEvent) -> String {
    canonical_event_with(e, |out| canonical_json_into(&e.detail, out))
}

fn canonical_event_with(e: &AuditEvent, detail: impl FnOnce(&mut String)) -> String {
    let mut out = String::with_capacity(256);
    out.push('[');
    out.push_str(&e.seq.to_string());
    for s in [&e.ts, &e.actor, &e.action, &e.kind, &e.name] {
        out.push(',');
        push_str(&mut out, s);
    }
    for s in [&e.team, &e.before_digest, &e.after_digest] {
        out.push(',');
        match s {
            Some(s) => push_str(&mut out, s),
            None => out.push_str("null"),
        }
    }
    out.push(',');
    detail(&mut out);
    out.push(',');
    push_str(&mut out, &e.prev_hash);
    out.push(']');
    out
}

/// Compact JSON with object keys sorted bytewise at every depth, whatever serde_json's
/// `preserve_order` feature says. Equal to `serde_json::to_string` when that feature is off.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    canonical_json_into(v, &mut out);
    out
}

fn canonical_json_into(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json_into(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, k);
                out.push(':');
                canonical_json_into(item, out);
            }
            out.push('}');
        }
        // Scalars: serde_json's own compact form.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn push_str(out: &mut String, s: &str) {
    // serde_json's escaping of a string, as `Value::String(s).to_string()` writes it.
    match serde_json::to_string(s) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str(&Value::String(s.to_owned()).to_string()),
    }
}

/// An event row as stored, with `detail` still as text so a damaged row can be reported
/// instead of failing the walk.
pub(crate) struct StoredEvent {
    pub(crate) event: AuditEvent,
    pub(crate) detail_text: String,
}

/// Walks the chain in `seq` order, one row at a time.
pub(crate) struct ChainWalker {
    pub(crate) checked: i64,
    last: Option<(i64, String)>,
}

impl ChainWalker {
    pub(crate) fn new() -> Self {
        ChainWalker {
            checked: 0,
            last: None,
        }
    }

    /// The `seq` of the last row seen (0 before the first).
    pub(crate) fn last_seq(&self) -> i64 {
        self.last.as_ref().map(|(s, _)| *s).unwrap_or(0)
    }

    /// Checks the next row; `Some` is the first bad event.
    pub(crate) fn step(&mut self, row: StoredEvent) -> Option<BadEvent> {
        let StoredEvent {
            mut event,
            detail_text,
        } = row;
        let seq = event.seq;
        let prev_seq = self.last_seq();
        if seq != prev_seq + 1 {
            let reason = if seq == prev_seq + 2 {
                format!(
                    "event {} is missing (seq jumps from {prev_seq} to {seq})",
                    seq - 1
                )
            } else if seq > prev_seq + 2 {
                format!(
                    "events {} to {} are missing (seq jumps from {prev_seq} to {seq})",
                    prev_seq + 1,
                    seq - 1
                )
            } else {
                format!(
                    "event {seq} is out of sequence (expected event {})",
                    prev_seq + 1
                )
            };
            return Some(BadEvent { seq, reason });
        }
        match serde_json::from_str::<Value>(&detail_text) {
            Ok(detail) => event.detail = detail,
            Err(_) => {
                return Some(BadEvent {
                    seq,
                    reason: format!("event {seq} was altered: its detail is not valid json"),
                });
            }
        }
        if event_hash(&event) != event.hash {
            return Some(BadEvent {
                seq,
                reason: format!("event {seq} was altered: its hash does not match its contents"),
            });
        }
        match &self.last {
            None if event.prev_hash != GENESIS_HASH => {
                return Some(BadEvent {
                    seq,
                    reason: format!(
                        "event {seq} does not start the chain: its previous hash is not the \
                         genesis hash"
                    ),
                });
            }
            Some((last_seq, last_hash)) if event.prev_hash != *last_hash => {
                return Some(BadEvent {
                    seq,
                    reason: format!(
                        "event {seq} does not follow event {last_seq}: its previous hash does \
                         not match"
                    ),
                });
            }
            _ => {}
        }
        self.checked += 1;
        self.last = Some((seq, event.hash));
        None
    }
}

/// The `WHERE`/`LIMIT` tail of a filtered audit query and its binds. Only placeholders go into
/// the SQL text; every value is bound.
pub(crate) fn filter_sql(filter: &AuditFilter) -> (String, Vec<Arg>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let mut push = |column: &str, op: &str, arg: Arg| {
        args.push(arg);
        conds.push(format!("{column} {op} ${}", args.len()));
    };
    for (column, value) in [
        ("actor", &filter.actor),
        ("action", &filter.action),
        ("kind", &filter.kind),
        ("name", &filter.name),
        ("team", &filter.team),
    ] {
        if let Some(v) = value {
            push(column, "=", Arg::from(v));
        }
    }
    if let Some(v) = &filter.since {
        push("ts", ">=", Arg::from(v));
    }
    if let Some(v) = &filter.until {
        push("ts", "<", Arg::from(v));
    }
    if let Some(v) = filter.after_seq {
        push("seq", ">", Arg::from(v));
    }
    let limit = filter
        .limit
        .unwrap_or(DEFAULT_AUDIT_LIMIT)
        .clamp(1, MAX_AUDIT_LIMIT);
    args.push(Arg::from(limit));
    let mut sql = String::new();
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY seq ASC LIMIT ${}", args.len()));
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> AuditEvent {
        AuditEvent {
            seq: 7,
            ts: "2025-01-02T03:04:05.000006Z".into(),
            actor: "token:abc(ci)".into(),
            action: "resource.update".into(),
            kind: "Pool".into(),
            name: "gpu-a".into(),
            team: None,
            before_digest: Some("aa".into()),
            after_digest: Some("bb".into()),
            detail: json!({"z": 1, "a": {"y": [1, 2.5, "é\"\u{0}"], "b": null}, "m": true}),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn canonical_matches_serde_json_array() {
        let e = sample();
        let want = serde_json::to_string(&json!([
            e.seq,
            e.ts,
            e.actor,
            e.action,
            e.kind,
            e.name,
            e.team,
            e.before_digest,
            e.after_digest,
            e.detail,
            e.prev_hash
        ]))
        .unwrap();
        assert_eq!(canonical_event(&e), want);
        assert!(canonical_event(&e).contains(r#"{"a":{"b":null,"y""#));
    }

    #[test]
    fn hash_is_hex_sha256_and_ignores_own_hash() {
        let mut e = sample();
        let h = event_hash(&e);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        e.hash = "something".into();
        assert_eq!(event_hash(&e), h);
        e.actor = "someone else".into();
        assert_ne!(event_hash(&e), h);
    }

    #[test]
    fn hash_from_detail_text_matches() {
        let e = sample();
        assert_eq!(
            event_hash_with_detail(&e, &canonical_json(&e.detail)),
            event_hash(&e)
        );
    }

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn filter_sql_uses_placeholders_only() {
        let f = AuditFilter {
            actor: Some("a'; DROP TABLE x; --".into()),
            team: Some("t".into()),
            since: Some("2025".into()),
            after_seq: Some(3),
            limit: Some(5000),
            ..Default::default()
        };
        let (sql, args) = filter_sql(&f);
        assert_eq!(
            sql,
            " WHERE actor = $1 AND team = $2 AND ts >= $3 AND seq > $4 ORDER BY seq ASC LIMIT $5"
        );
        assert_eq!(args.len(), 5);
        assert!(matches!(args[4], Arg::Int(1000)));
        let (sql, args) = filter_sql(&AuditFilter::default());
        assert_eq!(sql, " ORDER BY seq ASC LIMIT $1");
        assert!(matches!(args[0], Arg::Int(100)));
    }
}
