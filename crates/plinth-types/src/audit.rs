//! The audit log's event shapes: what a caller appends, what the store returns, and the result
//! of verifying the hash chain.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An event as an operation hands it to the store. The store assigns `seq` and the hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// RFC 3339 UTC with microseconds.
    pub ts: String,
    /// `token:<id>(<name>)`, or `system` for the server itself.
    pub actor: String,
    /// Dotted verb: `resource.create`, `resource.update`, `resource.delete`, `token.create`,
    /// `token.revoke`, `bootstrap`, ...
    pub action: String,
    /// Kind of the object acted on (`Pool`, `Queue`, `Token`, ...).
    pub kind: String,
    pub name: String,
    pub team: Option<String>,
    /// SHA-256 of the object before and after the change (`None` when absent).
    pub before_digest: Option<String>,
    pub after_digest: Option<String>,
    /// Small free-form context (reason, dry-run source, ...). Never secrets.
    pub detail: serde_json::Value,
}

/// A stored audit event with its position in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// 1, 2, 3, ... without gaps.
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub name: String,
    pub team: Option<String>,
    pub before_digest: Option<String>,
    pub after_digest: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// `hash` of the event before (64 zeros for the first event).
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this event's canonical fields.
    pub hash: String,
}

/// Filters for listing the audit log; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub team: Option<String>,
    /// Only events at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only events before this RFC 3339 time.
    pub until: Option<String>,
    /// Only events with `seq` greater than this (for paging).
    pub after_seq: Option<i64>,
    /// At most this many events (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// Events checked before stopping (all of them when `ok`).
    pub checked: i64,
    /// The first event that does not fit the chain.
    pub first_bad: Option<BadEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BadEvent {
    /// The `seq` where the chain breaks (for a deleted event, the one after the gap).
    pub seq: i64,
    /// What is wrong, e.g. `hash mismatch: the event was altered`.
    pub reason: String,
}
