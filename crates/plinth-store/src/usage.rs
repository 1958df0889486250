//! Metered usage, the input of the cost engine: one row per interval of one workload on one
//! pool (a job attempt, or a serving replica's interval reported by the gateway).
//!
//! Rows are keyed by `(source, id)`. Recording is idempotent: the same row again is counted as
//! a duplicate and changes nothing; the same key with other content is a conflict naming the
//! key, and nothing of that call is stored. Rows may arrive in any order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{DbRow, Tx, args};
use crate::error::StoreError;

/// Advisory lock key that serializes usage writes on PostgreSQL ("plinth" + 0x20).
const USAGE_LOCK: i64 = 0x706c_696e_7468_0020;

/// The source of job attempts' usage (written by the job controller).
pub const SOURCE_JOB: &str = "job";
/// The source of serving usage (written for the gateway's deployments).
pub const SOURCE_GATEWAY: &str = "gateway";

/// The most rows [`Store::list_usage`] returns at once.
pub const MAX_USAGE_ROWS: i64 = 5_000_000;

/// One stored usage interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    /// `job` or `gateway`.
    pub source: String,
    /// Unique within the source and stable: `job/<name>/attempt/<n>` for job attempts.
    pub id: String,
    /// `job` or `serving`.
    pub workload: String,
    /// The job's or the deployment's name.
    pub workload_name: String,
    /// The attempt number of a job; 0 for serving.
    pub attempt: i64,
    pub pool: String,
    /// `on_demand`, `reserved` or `spot`.
    pub procurement: String,
    /// RFC 3339 UTC with microseconds (`2026-11-02T10:00:00.000000Z`).
    pub start: String,
    pub end: String,
    pub request_gpus: f64,
    pub request_cpus: f64,
    pub request_memory_gib: f64,
    pub usage_gpus: f64,
    pub usage_cpus: f64,
    pub usage_memory_gib: f64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default)]
    pub inferences: i64,
    /// Why a job attempt ended (`completed`, `failed`, `preempted`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
}

impl UsageRow {
    /// Checks what the table cannot: non-empty keys, an end not before the start, finite
    /// non-negative amounts. The message names the record and the field.
    pub fn check(&self) -> Result<(), String> {
        let bad = |reason: String| format!("usage record {}/{}: {reason}", self.source, self.id);
        for (field, v) in [
            ("source", &self.source),
            ("id", &self.id),
            ("workload", &self.workload),
            ("workloadName", &self.workload_name),
            ("pool", &self.pool),
            ("procurement", &self.procurement),
            ("start", &self.start),
            ("end", &self.end),
        ] {
            if v.trim().is_empty() {
                return Err(bad(format!("{field} is empty")));
            }
        }
        if self.end < self.start {
            return Err(bad(format!(
                "ends ({}) before it starts ({})",
                self.end, self.start
            )));
        }
        for (field, v) in [
            ("requestGpus", self.request_gpus),
            ("requestCpus", self.request_cpus),
            ("requestMemoryGib", self.request_memory_gib),
            ("usageGpus", self.usage_gpus),
            ("usageCpus", self.usage_cpus),
            ("usageMemoryGib", self.usage_memory_gib),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(format!("{field} is {v}, not a finite amount >= 0")));
            }
        }
        if self.attempt < 0 || self.inferences < 0 {
            return Err(bad("attempt and inferences must not be negative".into()));
        }
        Ok(())
    }
}

/// What [`Store::record_usage`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageOutcome {
    /// Rows stored for the first time.
    pub inserted: usize,
    /// Rows already stored with the same content (counted once).
    pub duplicates: usize,
}

const USAGE_COLUMNS: &str = "source, id, workload, workload_name, attempt, pool, procurement, \
     start_at, end_at, request_gpus, request_cpus, request_memory, usage_gpus, usage_cpus, \
     usage_memory, tags, model_version, inferences, end_reason";

impl Store {
    /// Stores usage rows in one transaction, idempotently (see the module documentation).
    pub async fn record_usage(&self, rows: &[UsageRow]) -> Result<UsageOutcome, StoreError> {
        if rows.is_empty() {
            return Ok(UsageOutcome::default());
        }
        // Callers check rows first (and answer bad input as such); one that slips through is
        // a bug, and nothing of the call is stored.
        for r in rows {
            r.check().map_err(StoreError::Internal)?;
        }
        let what = format!("recording {} usage records", rows.len());
        let mut tx = self
            .pools()
            .begin_serialized(USAGE_LOCK)
            .await
            .map_err(self.ctx().err(&what))?;
        match self.record_usage_in(&mut tx, rows, &what).await {
            Ok(outcome) => {
                tx.commit().await.map_err(self.ctx().err(&what))?;
                Ok(outcome)
            }
            Err(e) => {
                tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn record_usage_in(
        &self,
        tx: &mut Tx<'static>,
        rows: &[UsageRow],
        what: &str,
    ) -> Result<UsageOutcome, StoreError> {
        let ctx = self.ctx();
        let now = crate::now_rfc3339();
        let mut out = UsageOutcome::default();
        for r in rows {
            let tags = serde_json::to_string(&r.tags)
                .map_err(|e| StoreError::Internal(format!("encoding usage tags: {e}")))?;
            let n = tx
                .execute(
                    "INSERT INTO usage_records (source, id, workload, workload_name, attempt, \
                     pool, procurement, start_at, end_at, request_gpus, request_cpus, \
                     request_memory, usage_gpus, usage_cpus, usage_memory, tags, model_version, \
                     inferences, end_reason, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                     $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
                     ON CONFLICT (source, id) DO NOTHING",
                    args![
                        r.source.as_str(),
                        r.id.as_str(),
                        r.workload.as_str(),
                        r.workload_name.as_str(),
                        r.attempt,
                        r.pool.as_str(),
                        r.procurement.as_str(),
                        r.start.as_str(),
                        r.end.as_str(),
                        r.request_gpus,
                        r.request_cpus,
                        r.request_memory_gib,
                        r.usage_gpus,
                        r.usage_cpus,
                        r.usage_memory_gib,
                        tags,
                        &r.model_version,
                        r.inferences,
                        &r.end_reason,
                        now.as_str()
                    ],
                )
                .await
                .map_err(ctx.err(what))?;
            if n == 1 {
                out.inserted += 1;
                continue;
            }
            let stored = tx
                .fetch_all_dyn(
                    format!(
                        "SELECT {USAGE_COLUMNS} FROM usage_records WHERE source = $1 AND id = $2"
                    ),
                    args![r.source.as_str(), r.id.as_str()],
                )
                .await
                .map_err(ctx.err(what))?;
            let same = match stored.first() {
                Some(row) => self.usage_from_row(row)? == *r,
                None => false,
            };
            if !same {
                return Err(StoreError::Conflict(format!(
                    "usage record {}/{} was already recorded with different content",
                    r.source, r.id
                )));
            }
            out.duplicates += 1;
        }
        Ok(out)
    }

    /// The usage rows whose interval overlaps `[since, until)` (both RFC 3339 UTC; a row
    /// overlaps when it starts before `until` and ends at or after `since`), ordered by source
    /// and id. At most [`MAX_USAGE_ROWS`].
    pub async fn list_usage(&self, since: &str, until: &str) -> Result<Vec<UsageRow>, StoreError> {
        let what = format!("listing usage records from {since} to {until}");
        let rows = self
            .pools()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {USAGE_COLUMNS} FROM usage_records WHERE start_at < $1 \
                     AND end_at >= $2 ORDER BY source, id LIMIT $3"
                )),
                args![until, since, MAX_USAGE_ROWS],
            )
            .await
            .map_err(self.ctx().err(&what))?;
        rows.iter().map(|r| self.usage_from_row(r)).collect()
    }

    /// How many usage rows are stored.
    pub async fn count_usage(&self) -> Result<i64, StoreError> {
        let what = "counting usage records";
        let row = self
            .pools()
            .fetch_optional("SELECT COUNT(*) AS n FROM usage_records", args![])
            .await
            .map_err(self.ctx().err(what))?;
        match row {
            Some(r) => r.int("n").map_err(self.ctx().err(what)),
            None => Ok(0),
        }
    }

    fn usage_from_row(&self, r: &DbRow) -> Result<UsageRow, StoreError> {
        let ctx = self.ctx();
        let what = "decoding a usage record row";
        let source = r.text("source").map_err(ctx.err(what))?;
        let id = r.text("id").map_err(ctx.err(what))?;
        let tags_text = r.text("tags").map_err(ctx.err(what))?;
        let tags = serde_json::from_str(&tags_text).map_err(|e| {
            StoreError::Corrupt(format!(
                "usage record {source}/{id} on {} has tags that are not a json object of strings: {e}",
                ctx.location
            ))
        })?;
        Ok(UsageRow {
            workload: r.text("workload").map_err(ctx.err(what))?,
            workload_name: r.text("workload_name").map_err(ctx.err(what))?,
            attempt: r.int("attempt").map_err(ctx.err(what))?,
            pool: r.text("pool").map_err(ctx.err(what))?,
            procurement: r.text("procurement").map_err(ctx.err(what))?,
            start: r.text("start_at").map_err(ctx.err(what))?,
            end: r.text("end_at").map_err(ctx.err(what))?,
            request_gpus: r.float("request_gpus").map_err(ctx.err(what))?,
            request_cpus: r.float("request_cpus").map_err(ctx.err(what))?,
            request_memory_gib: r.float("request_memory").map_err(ctx.err(what))?,
            usage_gpus: r.float("usage_gpus").map_err(ctx.err(what))?,
            usage_cpus: r.float("usage_cpus").map_err(ctx.err(what))?,
            usage_memory_gib: r.float("usage_memory").map_err(ctx.err(what))?,
            tags,
            model_version: r.opt_text("model_version").map_err(ctx.err(what))?,
            inferences: r.int("inferences").map_err(ctx.err(what))?,
            end_reason: r.opt_text("end_reason").map_err(ctx.err(what))?,
            source,
            id,
        })
    }
}
