//! The inference gateway's shared limit windows (migration 5): counters that every gateway on
//! one store adds to atomically, so that together they admit no more than a limit.

use crate::db::{DbRow, args};
use crate::error::StoreError;
use crate::{Backend, Store};

/// Advisory lock key of the serialized limit-window transactions on PostgreSQL ("plinth" + 0x30).
const LIMITS_LOCK: i64 = 0x706c_696e_7468_0030;

/// One window's counters after an addition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitCounts {
    pub requests: i64,
    pub tokens: i64,
    pub spend: f64,
}

/// Which window to add to.
#[derive(Debug, Clone, Copy)]
pub struct LimitWindow<'a> {
    pub deployment: &'a str,
    pub limit_key: &'a str,
    pub subject: &'a str,
    /// Unix seconds.
    pub window_start: i64,
    pub window_end: i64,
}

const ADD_SQL: &str = "INSERT INTO gateway_limit_windows (deployment, limit_key, subject, \
     window_start, window_end, requests, tokens, spend) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (deployment, limit_key, subject, window_start) DO UPDATE SET \
     requests = gateway_limit_windows.requests + excluded.requests, \
     tokens = gateway_limit_windows.tokens + excluded.tokens, \
     spend = gateway_limit_windows.spend + excluded.spend \
     RETURNING requests, tokens, spend";

fn counts(row: &DbRow) -> Result<LimitCounts, sqlx::Error> {
    Ok(LimitCounts {
        requests: row.int("requests")?,
        tokens: row.int("tokens")?,
        spend: row.float("spend")?,
    })
}

impl Store {
    /// Adds to a window's counters (creating it at zero) in one atomic statement and returns
    /// the totals after the addition.
    pub async fn add_gateway_limit_counts(
        &self,
        w: LimitWindow<'_>,
        add: LimitCounts,
    ) -> Result<LimitCounts, StoreError> {
        let what = "adding to a gateway limit window";
        let ctx = self.ctx();
        let a = args![
            w.deployment,
            w.limit_key,
            w.subject,
            w.window_start,
            w.window_end,
            add.requests,
            add.tokens,
            add.spend
        ];
        let row = match self.backend() {
            // One autocommitted statement: the row lock makes concurrent additions add up.
            Backend::Postgres => self
                .pools()
                .fetch_optional(ADD_SQL, a)
                .await
                .map_err(ctx.err(what))?,
            Backend::Sqlite => {
                let mut tx = self
                    .pools()
                    .begin_serialized(LIMITS_LOCK)
                    .await
                    .map_err(ctx.err(what))?;
                let row = tx.fetch_optional(ADD_SQL, a).await.map_err(ctx.err(what))?;
                tx.commit().await.map_err(ctx.err(what))?;
                row
            }
        };
        let row = row.ok_or_else(|| StoreError::Internal(format!("{what}: no row returned")))?;
        counts(&row).map_err(ctx.err(what))
    }

    /// Deletes the windows that ended before `before` (Unix seconds); returns how many.
    pub async fn prune_gateway_limit_windows(&self, before: i64) -> Result<u64, StoreError> {
        let what = "deleting ended gateway limit windows";
        let ctx = self.ctx();
        let mut tx = self
            .pools()
            .begin_serialized(LIMITS_LOCK)
            .await
            .map_err(ctx.err(what))?;
        let n = tx
            .execute(
                "DELETE FROM gateway_limit_windows WHERE window_end < $1",
                args![before],
            )
            .await
            .map_err(ctx.err(what))?;
        tx.commit().await.map_err(ctx.err(what))?;
        Ok(n)
    }
}
