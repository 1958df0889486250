//! The persistence layer of Plinth: resource objects, tokens, meta keys and the hash-chained
//! audit log, on SQLite (a file in WAL mode, the default) or PostgreSQL.
//!
//! Every write goes through [`Store::commit`], which applies a [`Batch`] of [`Op`]s and appends
//! its audit events in one transaction, serialized against every other writer, so the audit
//! chain has no gaps and a returned `Ok` is durable.

mod audit;
mod batch;
mod connect;
mod db;
mod error;
pub mod gateway_limits;
pub mod lineage;
mod migrate;
pub mod tracking;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use plinth_types::api::TokenRecord;
use plinth_types::audit::{AuditEvent, AuditFilter, AuditVerification};
use plinth_types::{Document, Role, StoredObject};

pub use audit::{
    DEFAULT_AUDIT_LIMIT, GENESIS_HASH, MAX_AUDIT_LIMIT, canonical_event, canonical_json, event_hash,
};
pub use batch::{Batch, Op, Precondition};
pub use error::StoreError;

use audit::{ChainWalker, EVENT_COLUMNS, StoredEvent, VERIFY_PAGE};
use db::{DbRow, Pools, args};
use error::DbCtx;

/// How long [`Store::ping`] waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a [`Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handle to the database. Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pools: Pools,
    ctx: DbCtx,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.ctx.backend)
            .field("location", &self.inner.ctx.location)
            .finish()
    }
}

const OBJECT_COLUMNS: &str =
    "kind, name, team, document, digest, generation, created_at, updated_at, updated_by";

const TOKEN_COLUMNS: &str = "id, name, team, role, salt, hash, created_at, created_by, revoked_at";

impl Store {
    /// Opens the database named by `url` and applies pending migrations.
    ///
    /// `url` is `sqlite://PATH` or `sqlite:PATH` (the file and its parent directories are
    /// created when missing), or `postgres://...` / `postgresql://...`. An unreachable
    /// database is [`StoreError::Unavailable`], with a message that names the backend and never
    /// the password.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let (target, ctx) = connect::parse(url)?;
        let pools = connect::open(target, &ctx).await?;
        if let Err(e) = migrate::run(&pools, &ctx).await {
            pools.close().await;
            return Err(e);
        }
        Ok(Store {
            inner: Arc::new(Inner { pools, ctx }),
        })
    }

    pub fn backend(&self) -> Backend {
        self.inner.ctx.backend
    }

    /// Where the data lives, for logs: `sqlite database PATH` or
    /// `postgres database HOST:PORT/DB` (never a password).
    pub fn location(&self) -> &str {
        &self.inner.ctx.location
    }

    fn ctx(&self) -> &DbCtx {
        &self.inner.ctx
    }

    fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    /// Checks that the database answers (for readiness probes), within a few seconds.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let what = "answering a ping";
        match tokio::time::timeout(
            PING_TIMEOUT,
            self.pools().fetch_optional("SELECT 1", args![]),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.ctx().classify(what, e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{} is unavailable: it did not answer a ping within {}s",
                self.ctx().location,
                PING_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pools().close().await;
    }

    /// The highest applied schema migration.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        migrate::schema_version(self.pools(), self.ctx()).await
    }

    pub async fn get_object(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        let what = format!("reading {kind} {name:?}");
        let row = self
            .pools()
            .fetch_optional(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects WHERE kind = $1 AND name = $2"
                )),
                args![kind, name],
            )
            .await
            .map_err(self.ctx().err(&what))?;
        row.map(|r| self.object_from_row(&r)).transpose()
    }

    /// Every object of `kind`, ordered by name (bytewise).
    pub async fn list_objects(&self, kind: &str) -> Result<Vec<StoredObject>, StoreError> {
        let what = format!("listing {kind} objects");
        let rows = self
            .pools()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects WHERE kind = $1 ORDER BY name"
                )),
                args![kind],
            )
            .await
            .map_err(self.ctx().err(&what))?;
        rows.iter().map(|r| self.object_from_row(r)).collect()
    }

    /// The number of objects of each kind that has any (one query, nothing decoded).
    pub async fn count_objects_by_kind(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let what = "counting objects";
        let rows = self
            .pools()
            .fetch_all(
                "SELECT kind, COUNT(*) AS n FROM objects GROUP BY kind",
                args![],
            )
            .await
            .map_err(self.ctx().err(what))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.text("kind").map_err(self.ctx().err(what))?,
                    r.int("n").map_err(self.ctx().err(what))?,
                ))
            })
            .collect()
    }

    pub async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let what = format!("reading token {id:?}");
        let row = self
            .pools()
            .fetch_optional(
                sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1")),
                args![id],
            )
            .await
            .map_err(self.ctx().err(&what))?;
        row.map(|r| self.token_from_row(&r)).transpose()
    }

    /// Every token, ordered by `created_at`, then `id`.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self
            .pools()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
                )),
                args![],
            )
            .await
            .map_err(self.ctx().err("listing tokens"))?;
        rows.iter().map(|r| self.token_from_row(r)).collect()
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let what = format!("reading meta key {key:?}");
        let row = self
            .pools()
            .fetch_optional("SELECT value FROM meta WHERE key = $1", args![key])
            .await
            .map_err(self.ctx().err(&what))?;
        row.map(|r| r.text("value").map_err(self.ctx().err(&what)))
            .transpose()
    }

    /// Applies every op of `batch` and appends every event, in one transaction that is
    /// serialized against all other writers; on any error nothing is stored. Returns the
    /// appended events with their `seq` and hashes.
    pub async fn commit(&self, batch: Batch) -> Result<Vec<AuditEvent>, StoreError> {
        self.commit_ref(&batch).await
    }

    /// [`Store::commit`] of a batch the caller keeps (to retry its ops one by one, say).
    pub async fn commit_ref(&self, batch: &Batch) -> Result<Vec<AuditEvent>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = self.ctx();
        let mut tx = self
            .pools()
            .begin_serialized(batch::COMMIT_LOCK)
            .await
            .map_err(ctx.err("starting a write transaction"))?;
        match batch::apply(&mut tx, ctx, batch).await {
            Ok(events) => {
                tx.commit()
                    .await
                    .map_err(ctx.err("committing a write transaction"))?;
                Ok(events)
            }
            Err(e) => {
                tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Audit events matching `filter`, in ascending `seq`. All string fields match exactly;
    /// `since` is inclusive and `until` exclusive (RFC 3339 UTC strings compared bytewise);
    /// `after_seq` pages. `limit` defaults to 100 and is clamped to 1..=1000.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let (tail, binds) = audit::filter_sql(filter);
        let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events{tail}");
        let what = "listing audit events";
        let rows = self
            .pools()
            .fetch_all(sqlx::AssertSqlSafe(sql), binds)
            .await
            .map_err(self.ctx().err(what))?;
        rows.iter()
            .map(|r| {
                let stored = self.event_from_row(r)?;
                let seq = stored.event.seq;
                let detail = serde_json::from_str(&stored.detail_text).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "audit event {seq} on {} has a detail that is not valid json: {e}",
                        self.ctx().location
                    ))
                })?;
                Ok(AuditEvent {
                    detail,
                    ..stored.event
                })
            })
            .collect()
    }

    /// The number of audit events.
    pub async fn count_audit(&self) -> Result<i64, StoreError> {
        let what = "counting audit events";
        let row = self
            .pools()
            .fetch_optional("SELECT COUNT(*) AS n FROM audit_events", args![])
            .await
            .map_err(self.ctx().err(what))?;
        match row {
            Some(r) => r.int("n").map_err(self.ctx().err(what)),
            None => Ok(0),
        }
    }

    /// Walks the whole chain in `seq` order, a page at a time, and reports the first event
    /// that does not fit: altered, missing, inserted or reordered.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let what = "reading audit events to verify them";
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq ASC LIMIT $2"
        );
        let mut walker = ChainWalker::new();
        let mut after = i64::MIN;
        loop {
            let rows = self
                .pools()
                .fetch_all(sqlx::AssertSqlSafe(sql.clone()), args![after, VERIFY_PAGE])
                .await
                .map_err(self.ctx().err(what))?;
            let full_page = rows.len() as i64 == VERIFY_PAGE;
            for r in &rows {
                let stored = self.event_from_row(r)?;
                after = stored.event.seq;
                if let Some(bad) = walker.step(stored) {
                    return Ok(AuditVerification {
                        ok: false,
                        checked: walker.checked,
                        first_bad: Some(bad),
                    });
                }
            }
            if !full_page {
                break;
            }
        }
        Ok(AuditVerification {
            ok: true,
            checked: walker.checked,
            first_bad: None,
        })
    }

    /// Runs raw SQL on the write connection. For tests that tamper with the data; no part of
    /// Plinth calls it.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        self.pools()
            .execute_raw(sql)
            .await
            .map_err(self.ctx().err("running raw sql"))
    }

    fn object_from_row(&self, r: &DbRow) -> Result<StoredObject, StoreError> {
        let ctx = self.ctx();
        let what = "decoding an object row";
        let kind = r.text("kind").map_err(ctx.err(what))?;
        let name = r.text("name").map_err(ctx.err(what))?;
        let document_text = r.text("document").map_err(ctx.err(what))?;
        let document: Document = serde_json::from_str(&document_text).map_err(|e| {
            StoreError::Corrupt(format!(
                "stored document of {kind} {name:?} on {} is not valid: {e}",
                ctx.location
            ))
        })?;
        Ok(StoredObject {
            team: r.opt_text("team").map_err(ctx.err(what))?,
            document,
            digest: r.text("digest").map_err(ctx.err(what))?,
            generation: r.int("generation").map_err(ctx.err(what))?,
            created_at: r.text("created_at").map_err(ctx.err(what))?,
            updated_at: r.text("updated_at").map_err(ctx.err(what))?,
            updated_by: r.text("updated_by").map_err(ctx.err(what))?,
            kind,
            name,
        })
    }

    fn token_from_row(&self, r: &DbRow) -> Result<TokenRecord, StoreError> {
        let ctx = self.ctx();
        let what = "decoding a token row";
        let id = r.text("id").map_err(ctx.err(what))?;
        let role_text = r.text("role").map_err(ctx.err(what))?;
        let role = Role::parse(&role_text).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "token {id:?} on {} has an unknown role {role_text:?}",
                ctx.location
            ))
        })?;
        Ok(TokenRecord {
            name: r.text("name").map_err(ctx.err(what))?,
            team: r.opt_text("team").map_err(ctx.err(what))?,
            role,
            salt: r.text("salt").map_err(ctx.err(what))?,
            hash: r.text("hash").map_err(ctx.err(what))?,
            created_at: r.text("created_at").map_err(ctx.err(what))?,
            created_by: r.text("created_by").map_err(ctx.err(what))?,
            revoked_at: r.opt_text("revoked_at").map_err(ctx.err(what))?,
            id,
        })
    }

    fn event_from_row(&self, r: &DbRow) -> Result<StoredEvent, StoreError> {
        let ctx = self.ctx();
        let what = "decoding an audit event row";
        Ok(StoredEvent {
            event: AuditEvent {
                seq: r.int("seq").map_err(ctx.err(what))?,
                ts: r.text("ts").map_err(ctx.err(what))?,
                actor: r.text("actor").map_err(ctx.err(what))?,
                action: r.text("action").map_err(ctx.err(what))?,
                kind: r.text("kind").map_err(ctx.err(what))?,
                name: r.text("name").map_err(ctx.err(what))?,
                team: r.opt_text("team").map_err(ctx.err(what))?,
                before_digest: r.opt_text("before_digest").map_err(ctx.err(what))?,
                after_digest: r.opt_text("after_digest").map_err(ctx.err(what))?,
                detail: serde_json::Value::Null,
                prev_hash: r.text("prev_hash").map_err(ctx.err(what))?,
                hash: r.text("hash").map_err(ctx.err(what))?,
            },
            detail_text: r.text("detail").map_err(ctx.err(what))?,
        })
    }
}

/// Now as RFC 3339 UTC with microseconds.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
