//! A tiny versioned-migration runner. Each backend has its own ordered SQL files, embedded in
//! the binary; `schema_migrations(version, name, applied_at)` records what has been applied.
//! Every migration runs in its own transaction that holds the write lock (`BEGIN IMMEDIATE` on
//! SQLite, an advisory lock on PostgreSQL) and re-checks whether it was applied, so two
//! processes starting at once apply each migration exactly once.

use crate::Backend;
use crate::db::{Pools, args};
use crate::error::{DbCtx, StoreError};

/// Advisory lock key that serializes migrations on PostgreSQL ("plinth" + 1).
const MIGRATION_LOCK: i64 = 0x706c_696e_7468_0001;

/// One schema change.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "tracking",
        sql: include_str!("../migrations/sqlite/0002_tracking.sql"),
    },
    Migration {
        version: 3,
        name: "lineage",
        sql: include_str!("../migrations/sqlite/0003_lineage.sql"),
    },
    Migration {
        version: 4,
        name: "usage",
        sql: include_str!("../migrations/sqlite/0004_usage.sql"),
    },
    Migration {
        version: 5,
        name: "gateway_limits",
        sql: include_str!("../migrations/sqlite/0005_gateway_limits.sql"),
    },
    Migration {
        version: 6,
        name: "logged_models",
        sql: include_str!("../migrations/sqlite/0006_logged_models.sql"),
    },
];

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "tracking",
        sql: include_str!("../migrations/postgres/0002_tracking.sql"),
    },
    Migration {
        version: 3,
        name: "lineage",
        sql: include_str!("../migrations/postgres/0003_lineage.sql"),
    },
    Migration {
        version: 4,
        name: "usage",
        sql: include_str!("../migrations/postgres/0004_usage.sql"),
    },
    Migration {
        version: 5,
        name: "gateway_limits",
        sql: include_str!("../migrations/postgres/0005_gateway_limits.sql"),
    },
    Migration {
        version: 6,
        name: "logged_models",
        sql: include_str!("../migrations/postgres/0006_logged_models.sql"),
    },
];

const CREATE_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

const CREATE_TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

pub(crate) fn migrations(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

/// The newest schema version this build knows.
pub(crate) fn latest_version(backend: Backend) -> i64 {
    migrations(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Applies every migration not yet applied, in version order.
pub(crate) async fn run(pools: &Pools, ctx: &DbCtx) -> Result<(), StoreError> {
    let backend = pools.backend();
    let create = match backend {
        Backend::Sqlite => CREATE_TABLE_SQLITE,
        Backend::Postgres => CREATE_TABLE_POSTGRES,
    };
    {
        let what = "creating the schema_migrations table";
        let mut tx = pools
            .begin_serialized(MIGRATION_LOCK)
            .await
            .map_err(ctx.err(what))?;
        tx.execute_script(create).await.map_err(ctx.err(what))?;
        tx.commit().await.map_err(ctx.err(what))?;
    }

    for m in migrations(backend) {
        let what = format!("applying migration {} ({})", m.version, m.name);
        let mut tx = pools
            .begin_serialized(MIGRATION_LOCK)
            .await
            .map_err(ctx.err(&what))?;
        let applied = tx
            .fetch_optional(
                "SELECT version FROM schema_migrations WHERE version = $1",
                args![m.version],
            )
            .await
            .map_err(ctx.err(&what))?
            .is_some();
        if applied {
            tx.rollback().await;
            continue;
        }
        tx.execute_script(m.sql).await.map_err(ctx.err(&what))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            args![m.version, m.name, crate::now_rfc3339()],
        )
        .await
        .map_err(ctx.err(&what))?;
        tx.commit().await.map_err(ctx.err(&what))?;
        tracing::info!(version = m.version, name = m.name, backend = %backend, "applied migration");
    }

    let current = schema_version(pools, ctx).await?;
    let latest = latest_version(backend);
    if current > latest {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {current}, newer than this release supports ({latest}); \
             run a newer release",
            ctx.location
        )));
    }
    Ok(())
}

/// The highest applied migration version (0 when none).
pub(crate) async fn schema_version(pools: &Pools, ctx: &DbCtx) -> Result<i64, StoreError> {
    let what = "reading the schema version";
    let row = pools
        .fetch_optional(
            "SELECT MAX(version) AS version FROM schema_migrations",
            args![],
        )
        .await
        .map_err(ctx.err(what))?;
    match row {
        Some(r) => Ok(r.opt_int("version").map_err(ctx.err(what))?.unwrap_or(0)),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_match_across_backends() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let ms = migrations(backend);
            for (i, m) in ms.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{backend} migration {}", m.name);
                assert!(!m.sql.trim().is_empty());
            }
        }
        let names = |b| {
            migrations(b)
                .iter()
                .map(|m| (m.version, m.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Backend::Sqlite), names(Backend::Postgres));
    }
}
