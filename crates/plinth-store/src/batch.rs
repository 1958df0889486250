//! Write batches: the operations a commit applies and the audit events it appends, all in one
//! transaction.

use plinth_types::StoredObject;
use plinth_types::api::TokenRecord;
use plinth_types::audit::{AuditEvent, NewAuditEvent};

use crate::audit::{GENESIS_HASH, canonical_json, event_hash};
use crate::db::{Tx, args};
use crate::error::{DbCtx, StoreError};

/// Advisory lock key that serializes commits on PostgreSQL ("plinth" + 2).
pub(crate) const COMMIT_LOCK: i64 = 0x706c_696e_7468_0002;

/// Everything one commit does: every op and every event, or nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub ops: Vec<Op>,
    pub events: Vec<NewAuditEvent>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    pub fn event(mut self, event: NewAuditEvent) -> Self {
        self.events.push(event);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.events.is_empty()
    }
}

/// What must hold about the stored object before a put or delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precondition {
    /// No requirement.
    #[default]
    None,
    /// The object must not exist.
    Absent,
    /// The object must exist with exactly this generation.
    Generation(i64),
}

/// One change inside a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Insert or replace the object row exactly as given (the caller sets generation, times
    /// and digest).
    PutObject {
        object: StoredObject,
        precondition: Precondition,
    },
    /// Delete the object; `NotFound` if it does not exist.
    DeleteObject {
        kind: String,
        name: String,
        precondition: Precondition,
    },
    /// Insert a token; `AlreadyExists` if the id is taken.
    PutToken { token: TokenRecord },
    /// Set `revoked_at`; `NotFound` if the token does not exist; a token already revoked keeps
    /// its first revocation time.
    RevokeToken { id: String, at: String },
    /// Set a meta key; `Conflict` if `only_if_absent` and the key exists.
    PutMeta {
        key: String,
        value: String,
        only_if_absent: bool,
    },
}

/// Applies `batch` inside `tx` (which already holds the write lock). The caller commits.
pub(crate) async fn apply(
    tx: &mut Tx<'_>,
    ctx: &DbCtx,
    batch: Batch,
) -> Result<Vec<AuditEvent>, StoreError> {
    for op in batch.ops {
        apply_op(tx, ctx, op).await?;
    }
    append_events(tx, ctx, batch.events).await
}

fn object_ref(kind: &str, name: &str) -> String {
    format!("{kind} {name:?}")
}

async fn current_generation(
    tx: &mut Tx<'_>,
    ctx: &DbCtx,
    kind: &str,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    let what = format!("reading {}", object_ref(kind, name));
    let row = tx
        .fetch_optional(
            "SELECT generation FROM objects WHERE kind = $1 AND name = $2",
            args![kind, name],
        )
        .await
        .map_err(ctx.err(&what))?;
    match row {
        Some(r) => Ok(Some(r.int("generation").map_err(ctx.err(&what))?)),
        None => Ok(None),
    }
}

fn check_precondition(
    kind: &str,
    name: &str,
    current: Option<i64>,
    pre: Precondition,
) -> Result<(), StoreError> {
    match (pre, current) {
        (Precondition::None, _) | (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::Conflict(format!(
            "{} already exists (expected it to be absent)",
            object_ref(kind, name)
        ))),
        (Precondition::Generation(want), Some(have)) if want == have => Ok(()),
        (Precondition::Generation(want), Some(have)) => Err(StoreError::Conflict(format!(
            "{} was changed concurrently: expected generation {want}, found {have}",
            object_ref(kind, name)
        ))),
        (Precondition::Generation(want), None) => Err(StoreError::Conflict(format!(
            "{} was deleted concurrently: expected generation {want}, found none",
            object_ref(kind, name)
        ))),
    }
}

async fn apply_op(tx: &mut Tx<'_>, ctx: &DbCtx, op: Op) -> Result<(), StoreError> {
    match op {
        Op::PutObject {
            object,
            precondition,
        } => {
            let current = current_generation(tx, ctx, &object.kind, &object.name).await?;
            check_precondition(&object.kind, &object.name, current, precondition)?;
            let what = format!("storing {}", object_ref(&object.kind, &object.name));
            let document = serde_json::to_string(&object.document).map_err(|e| {
                StoreError::Internal(format!("cannot encode the document of {what}: {e}"))
            })?;
            tx.execute(
                "INSERT INTO objects (kind, name, team, document, digest, generation, \
                 created_at, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (kind, name) DO UPDATE SET team = excluded.team, \
                 document = excluded.document, digest = excluded.digest, \
                 generation = excluded.generation, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                args![
                    object.kind,
                    object.name,
                    object.team,
                    document,
                    object.digest,
                    object.generation,
                    object.created_at,
                    object.updated_at,
                    object.updated_by,
                ],
            )
            .await
            .map_err(ctx.err(&what))?;
        }
        Op::DeleteObject {
            kind,
            name,
            precondition,
        } => {
            let current = current_generation(tx, ctx, &kind, &name).await?;
            if current.is_none() {
                return Err(StoreError::NotFound(format!(
                    "{} not found",
                    object_ref(&kind, &name)
                )));
            }
            check_precondition(&kind, &name, current, precondition)?;
            let what = format!("deleting {}", object_ref(&kind, &name));
            tx.execute(
                "DELETE FROM objects WHERE kind = $1 AND name = $2",
                args![kind, name],
            )
            .await
            .map_err(ctx.err(&what))?;
        }
        Op::PutToken { token } => {
            let what = format!("storing token {:?}", token.id);
            let exists = tx
                .fetch_optional("SELECT id FROM tokens WHERE id = $1", args![&token.id])
                .await
                .map_err(ctx.err(&what))?
                .is_some();
            if exists {
                return Err(StoreError::AlreadyExists(format!(
                    "token {:?} already exists",
                    token.id
                )));
            }
            tx.execute(
                "INSERT INTO tokens (id, name, team, role, salt, hash, created_at, created_by, \
                 revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                args![
                    token.id,
                    token.name,
                    token.team,
                    token.role.as_str(),
                    token.salt,
                    token.hash,
                    token.created_at,
                    token.created_by,
                    token.revoked_at,
                ],
            )
            .await
            .map_err(ctx.err(&what))?;
        }
        Op::RevokeToken { id, at } => {
            let what = format!("revoking token {id:?}");
            let changed = tx
                .execute(
                    "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    args![&id, at],
                )
                .await
                .map_err(ctx.err(&what))?;
            if changed == 0 {
                let exists = tx
                    .fetch_optional("SELECT id FROM tokens WHERE id = $1", args![&id])
                    .await
                    .map_err(ctx.err(&what))?
                    .is_some();
                if !exists {
                    return Err(StoreError::NotFound(format!("token {id:?} not found")));
                }
            }
        }
        Op::PutMeta {
            key,
            value,
            only_if_absent,
        } => {
            let what = format!("setting meta key {key:?}");
            if only_if_absent {
                let exists = tx
                    .fetch_optional("SELECT key FROM meta WHERE key = $1", args![&key])
                    .await
                    .map_err(ctx.err(&what))?
                    .is_some();
                if exists {
                    return Err(StoreError::Conflict(format!(
                        "meta key {key:?} is already set"
                    )));
                }
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![key, value],
            )
            .await
            .map_err(ctx.err(&what))?;
        }
    }
    Ok(())
}

/// Appends `events` after the current last event, chaining their hashes.
async fn append_events(
    tx: &mut Tx<'_>,
    ctx: &DbCtx,
    events: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let what = "appending audit events";
    // Every commit holds the write lock, so a taken seq means another writer bypassed it.
    let err = |e: sqlx::Error| match ctx.classify(what, e) {
        StoreError::AlreadyExists(m) => StoreError::Conflict(m),
        other => other,
    };
    let last = tx
        .fetch_optional(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            args![],
        )
        .await
        .map_err(err)?;
    let (mut seq, mut prev_hash) = match last {
        Some(r) => (r.int("seq").map_err(err)?, r.text("hash").map_err(err)?),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        // Hash the detail exactly as it will read back: parse the stored text again, so the
        // hash a verifier recomputes from the row is the one computed here.
        let detail_text = canonical_json(&e.detail);
        let detail = serde_json::from_str(&detail_text).map_err(|err| {
            StoreError::Internal(format!(
                "cannot encode the detail of audit event {seq}: {err}"
            ))
        })?;
        let mut event = AuditEvent {
            seq,
            ts: e.ts,
            actor: e.actor,
            action: e.action,
            kind: e.kind,
            name: e.name,
            team: e.team,
            before_digest: e.before_digest,
            after_digest: e.after_digest,
            detail,
            prev_hash,
            hash: String::new(),
        };
        event.hash = event_hash(&event);
        tx.execute(
            "INSERT INTO audit_events (seq, ts, actor, action, kind, name, team, before_digest, \
             after_digest, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            args![
                event.seq,
                &event.ts,
                &event.actor,
                &event.action,
                &event.kind,
                &event.name,
                &event.team,
                &event.before_digest,
                &event.after_digest,
                detail_text,
                &event.prev_hash,
                &event.hash,
            ],
        )
        .await
        .map_err(err)?;
        prev_hash = event.hash.clone();
        out.push(event);
    }
    Ok(out)
}
