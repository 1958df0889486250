//! Write batches: the operations a commit applies and the audit events it appends, all in one
//! transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use plinth_types::StoredObject;
use plinth_types::api::TokenRecord;
use plinth_types::audit::{AuditEvent, NewAuditEvent};

use crate::Backend;
use crate::audit::{GENESIS_HASH, canonical_json, event_hash, event_hash_with_detail};
use crate::db::{Arg, Tx, args};
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
    /// As [`Op::PutObject`], with the document already encoded: `document_json` is the row's
    /// document, stored as it is, and `object.document` is not read (a caller that encoded the
    /// document itself, and hashed those bytes for the digest, may leave its `spec` null).
    PutEncoded {
        object: StoredObject,
        document_json: String,
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

/// Rows per multi-row statement: 500 objects (9 binds each) or events (12 binds each) stay far
/// below the bind limits of both databases (SQLite 32,766; PostgreSQL 65,535).
const ROWS_PER_STATEMENT: usize = 500;

/// Applies `batch` inside `tx` (which already holds the write lock). The caller commits.
///
/// The objects of a batch cost a handful of statements whatever their number: one `SELECT`
/// per kind (per 500 names) reads the current generations, the preconditions are checked in
/// memory in the order of the ops, and the final state of each object is written with
/// multi-row `DELETE` and `INSERT ... ON CONFLICT` statements. The events go in with multi-row
/// `INSERT`s, their hash chain computed here.
pub(crate) async fn apply(
    tx: &mut Tx<'_>,
    ctx: &DbCtx,
    batch: &Batch,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut objects = ObjectWrites::load(tx, ctx, &batch.ops).await?;
    for op in &batch.ops {
        match op {
            Op::PutObject {
                object,
                precondition,
            } => objects.put(object, None, *precondition)?,
            Op::PutEncoded {
                object,
                document_json,
                precondition,
            } => objects.put(object, Some(document_json), *precondition)?,
            Op::DeleteObject {
                kind,
                name,
                precondition,
            } => objects.delete(kind, name, *precondition)?,
            other => apply_op(tx, ctx, other).await?,
        }
    }
    objects.write(tx, ctx).await?;
    append_events(tx, ctx, &batch.events).await
}

fn object_ref(kind: &str, name: &str) -> String {
    format!("{kind} {name:?}")
}

/// `$first, $first+1, ..., $first+n-1` on PostgreSQL; `?, ?, ...` on SQLite, whose driver
/// looks up every numbered placeholder by name (a scan of all of them: quadratic in the binds
/// of a statement), while anonymous ones bind in order at no such cost.
fn placeholders(backend: Backend, first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 6);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        match backend {
            Backend::Sqlite => out.push('?'),
            Backend::Postgres => {
                out.push('$');
                out.push_str(&(first + i).to_string());
            }
        }
    }
    out
}

/// `($1, ..., $cols), ($cols+1, ...), ...` for `rows` rows (see [`placeholders`]).
fn value_rows(backend: Backend, rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&placeholders(backend, r * cols + 1, cols));
        out.push(')');
    }
    out
}

/// An object: its kind and name.
type Key<'a> = (&'a str, &'a str);

/// What a batch does to one object in the end.
enum Final<'a> {
    /// The object, and its document's JSON when the op carried it.
    Put(&'a StoredObject, Option<&'a str>),
    Delete,
}

/// The object ops of a batch, checked in memory against the generations read at its start.
struct ObjectWrites<'a> {
    /// The generation of each object the batch touches, as the ops so far leave it.
    current: HashMap<Key<'a>, Option<i64>>,
    /// The last op on each object, in the order objects were first touched.
    finals: Vec<(Key<'a>, Final<'a>)>,
    index: HashMap<Key<'a>, usize>,
}

impl<'a> ObjectWrites<'a> {
    /// Reads the generation of every object `ops` touch: one query per kind and 500 names.
    async fn load(tx: &mut Tx<'_>, ctx: &DbCtx, ops: &'a [Op]) -> Result<Self, StoreError> {
        let mut by_kind: BTreeMap<&'a str, BTreeSet<&'a str>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::PutObject { object, .. } | Op::PutEncoded { object, .. } => {
                    by_kind
                        .entry(&object.kind)
                        .or_default()
                        .insert(&object.name);
                }
                Op::DeleteObject { kind, name, .. } => {
                    by_kind.entry(kind).or_default().insert(name);
                }
                _ => {}
            }
        }
        let mut current = HashMap::new();
        for (kind, names) in by_kind {
            let names: Vec<&str> = names.into_iter().collect();
            for chunk in names.chunks(ROWS_PER_STATEMENT) {
                let what = match chunk {
                    [one] => format!("reading {}", object_ref(kind, one)),
                    _ => format!("reading {} {kind} objects", chunk.len()),
                };
                let sql = format!(
                    "SELECT name, generation FROM objects WHERE kind = {} AND name IN ({})",
                    placeholders(ctx.backend, 1, 1),
                    placeholders(ctx.backend, 2, chunk.len())
                );
                let mut binds = Vec::with_capacity(chunk.len() + 1);
                binds.push(Arg::from(kind));
                binds.extend(chunk.iter().map(|n| Arg::from(*n)));
                let rows = tx.fetch_all_dyn(sql, binds).await.map_err(ctx.err(&what))?;
                for name in chunk {
                    current.insert((kind, *name), None);
                }
                for r in rows {
                    let name = r.text("name").map_err(ctx.err(&what))?;
                    let generation = r.int("generation").map_err(ctx.err(&what))?;
                    // `chunk` is sorted (it comes from a set); the row is one of its names.
                    if let Ok(i) = chunk.binary_search(&name.as_str()) {
                        current.insert((kind, chunk[i]), Some(generation));
                    }
                }
            }
        }
        Ok(ObjectWrites {
            current,
            finals: Vec::new(),
            index: HashMap::new(),
        })
    }

    fn generation(&self, key: Key<'a>) -> Option<i64> {
        self.current.get(&key).copied().flatten()
    }

    fn set_final(&mut self, key: Key<'a>, f: Final<'a>) {
        match self.index.get(&key) {
            Some(&i) => self.finals[i].1 = f,
            None => {
                self.index.insert(key, self.finals.len());
                self.finals.push((key, f));
            }
        }
    }

    fn put(
        &mut self,
        object: &'a StoredObject,
        document_json: Option<&'a String>,
        pre: Precondition,
    ) -> Result<(), StoreError> {
        let key = (object.kind.as_str(), object.name.as_str());
        check_precondition(key.0, key.1, self.generation(key), pre)?;
        self.current.insert(key, Some(object.generation));
        self.set_final(key, Final::Put(object, document_json.map(String::as_str)));
        Ok(())
    }

    fn delete(
        &mut self,
        kind: &'a str,
        name: &'a str,
        pre: Precondition,
    ) -> Result<(), StoreError> {
        let key = (kind, name);
        let current = self.generation(key);
        if current.is_none() {
            return Err(StoreError::NotFound(format!(
                "{} not found",
                object_ref(kind, name)
            )));
        }
        check_precondition(kind, name, current, pre)?;
        self.current.insert(key, None);
        self.set_final(key, Final::Delete);
        Ok(())
    }

    /// Writes the final state of every touched object: deletes by kind, then upserts.
    async fn write(self, tx: &mut Tx<'_>, ctx: &DbCtx) -> Result<(), StoreError> {
        let mut deletes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut puts = Vec::new();
        for ((kind, name), f) in self.finals {
            match f {
                Final::Delete => deletes.entry(kind).or_default().push(name),
                Final::Put(object, json) => puts.push((object, json)),
            }
        }
        for (kind, names) in deletes {
            for chunk in names.chunks(ROWS_PER_STATEMENT) {
                let what = match chunk {
                    [one] => format!("deleting {}", object_ref(kind, one)),
                    _ => format!("deleting {} {kind} objects", chunk.len()),
                };
                let sql = format!(
                    "DELETE FROM objects WHERE kind = {} AND name IN ({})",
                    placeholders(ctx.backend, 1, 1),
                    placeholders(ctx.backend, 2, chunk.len())
                );
                let mut binds = Vec::with_capacity(chunk.len() + 1);
                binds.push(Arg::from(kind));
                binds.extend(chunk.iter().map(|n| Arg::from(*n)));
                tx.execute_dyn(sql, binds).await.map_err(ctx.err(&what))?;
            }
        }
        for chunk in puts.chunks(ROWS_PER_STATEMENT) {
            let what = match chunk {
                [(one, _)] => format!("storing {}", object_ref(&one.kind, &one.name)),
                _ => format!("storing {} objects", chunk.len()),
            };
            let sql = format!(
                "INSERT INTO objects (kind, name, team, document, digest, generation, \
                 created_at, updated_at, updated_by) VALUES {} \
                 ON CONFLICT (kind, name) DO UPDATE SET team = excluded.team, \
                 document = excluded.document, digest = excluded.digest, \
                 generation = excluded.generation, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                value_rows(ctx.backend, chunk.len(), 9)
            );
            let mut binds = Vec::with_capacity(chunk.len() * 9);
            for (object, json) in chunk {
                let document = match json {
                    Some(json) => (*json).to_owned(),
                    None => serde_json::to_string(&object.document).map_err(|e| {
                        StoreError::Internal(format!(
                            "cannot encode the document of {}: {e}",
                            object_ref(&object.kind, &object.name)
                        ))
                    })?,
                };
                binds.extend(args![
                    &object.kind,
                    &object.name,
                    &object.team,
                    document,
                    &object.digest,
                    object.generation,
                    &object.created_at,
                    &object.updated_at,
                    &object.updated_by,
                ]);
            }
            tx.execute_dyn(sql, binds).await.map_err(ctx.err(&what))?;
        }
        Ok(())
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

async fn apply_op(tx: &mut Tx<'_>, ctx: &DbCtx, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::PutObject { .. } | Op::PutEncoded { .. } | Op::DeleteObject { .. } => {
            return Err(StoreError::Internal(
                "object ops are applied together, not one by one".into(),
            ));
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
                    &token.id,
                    &token.name,
                    &token.team,
                    token.role.as_str(),
                    &token.salt,
                    &token.hash,
                    &token.created_at,
                    &token.created_by,
                    &token.revoked_at,
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
                    args![id, at],
                )
                .await
                .map_err(ctx.err(&what))?;
            if changed == 0 {
                let exists = tx
                    .fetch_optional("SELECT id FROM tokens WHERE id = $1", args![id])
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
            if *only_if_absent {
                let exists = tx
                    .fetch_optional("SELECT key FROM meta WHERE key = $1", args![key])
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
    events: &[NewAuditEvent],
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
    let mut texts = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        // Hash the detail exactly as it will read back. Without floats the stored text parses
        // back to the same value, whose canonical text is this one: hash the text as it is.
        // With floats, parse the stored text again, so the hash a verifier recomputes from the
        // row is the one computed here.
        let detail_text = canonical_json(&e.detail);
        let exact = !has_float(&e.detail);
        let detail = if exact {
            e.detail.clone()
        } else {
            serde_json::from_str(&detail_text).map_err(|err| {
                StoreError::Internal(format!(
                    "cannot encode the detail of audit event {seq}: {err}"
                ))
            })?
        };
        let mut event = AuditEvent {
            seq,
            ts: e.ts.clone(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            kind: e.kind.clone(),
            name: e.name.clone(),
            team: e.team.clone(),
            before_digest: e.before_digest.clone(),
            after_digest: e.after_digest.clone(),
            detail,
            prev_hash,
            hash: String::new(),
        };
        event.hash = if exact {
            event_hash_with_detail(&event, &detail_text)
        } else {
            event_hash(&event)
        };
        prev_hash = event.hash.clone();
        out.push(event);
        texts.push(detail_text);
    }
    for (chunk, details) in out
        .chunks(ROWS_PER_STATEMENT)
        .zip(texts.chunks_mut(ROWS_PER_STATEMENT))
    {
        let sql = format!(
            "INSERT INTO audit_events (seq, ts, actor, action, kind, name, team, \
             before_digest, after_digest, detail, prev_hash, hash) VALUES {}",
            value_rows(ctx.backend, chunk.len(), 12)
        );
        let mut binds = Vec::with_capacity(chunk.len() * 12);
        for (event, detail_text) in chunk.iter().zip(details.iter_mut()) {
            binds.extend(args![
                event.seq,
                &event.ts,
                &event.actor,
                &event.action,
                &event.kind,
                &event.name,
                &event.team,
                &event.before_digest,
                &event.after_digest,
                std::mem::take(detail_text),
                &event.prev_hash,
                &event.hash,
            ]);
        }
        tx.execute_dyn(sql, binds).await.map_err(err)?;
    }
    Ok(out)
}

/// Does `v` hold a floating-point number anywhere?
fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(items) => items.iter().any(has_float),
        serde_json::Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}
