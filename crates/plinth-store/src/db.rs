//! A thin layer over the two sqlx drivers so that every query is written once: owned bind
//! values, a row with typed getters, the pools, and a serialized write transaction.

use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr, Transaction};

use crate::Backend;

/// A value to bind to a `$n` placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Float(f64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Text(s.to_owned())
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

impl From<&String> for Arg {
    fn from(s: &String) -> Self {
        Arg::Text(s.clone())
    }
}

impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Self {
        Arg::OptText(s)
    }
}

impl From<&Option<String>> for Arg {
    fn from(s: &Option<String>) -> Self {
        Arg::OptText(s.clone())
    }
}

impl From<i64> for Arg {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl From<Option<i64>> for Arg {
    fn from(i: Option<i64>) -> Self {
        Arg::OptInt(i)
    }
}

impl From<f64> for Arg {
    fn from(f: f64) -> Self {
        Arg::Float(f)
    }
}

/// `args![a, b, c]`: a `Vec<Arg>` from values convertible into [`Arg`].
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$($crate::db::Arg::from($a)),*]
    };
}
pub(crate) use args;

/// `sqlx::query` for database `$db` with every argument bound in order.
macro_rules! bound {
    ($db:ty, $sql:expr, $args:expr) => {{
        let mut q = sqlx::query::<$db>($sql);
        for a in $args {
            q = match a {
                $crate::db::Arg::Text(s) => q.bind(s),
                $crate::db::Arg::OptText(s) => q.bind(s),
                $crate::db::Arg::Int(i) => q.bind(i),
                $crate::db::Arg::OptInt(i) => q.bind(i),
                $crate::db::Arg::Float(f) => q.bind(f),
            };
        }
        q
    }};
}

/// A result row of either backend.
pub(crate) enum DbRow {
    Sqlite(SqliteRow),
    Pg(PgRow),
}

impl DbRow {
    pub(crate) fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Pg(r) => r.try_get(col),
        }
    }

    pub(crate) fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Pg(r) => r.try_get(col),
        }
    }

    pub(crate) fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Pg(r) => r.try_get(col),
        }
    }

    pub(crate) fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Pg(r) => r.try_get(col),
        }
    }

    pub(crate) fn float(&self, col: &str) -> Result<f64, sqlx::Error> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Pg(r) => r.try_get(col),
        }
    }
}

/// The connection pools. SQLite has a single-connection write pool, which serializes writers
/// inside the process, and a read pool; PostgreSQL has one pool.
#[derive(Clone)]
pub(crate) enum Pools {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Pg(PgPool),
}

impl Pools {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Pg(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn fetch_all(
        &self,
        sql: impl SqlSafeStr,
        args: Vec<Arg>,
    ) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match self {
            Pools::Sqlite { read, .. } => bound!(Sqlite, sql, args)
                .fetch_all(read)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Pools::Pg(pool) => bound!(Postgres, sql, args)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(DbRow::Pg)
                .collect(),
        })
    }

    pub(crate) async fn fetch_optional(
        &self,
        sql: impl SqlSafeStr,
        args: Vec<Arg>,
    ) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(match self {
            Pools::Sqlite { read, .. } => bound!(Sqlite, sql, args)
                .fetch_optional(read)
                .await?
                .map(DbRow::Sqlite),
            Pools::Pg(pool) => bound!(Postgres, sql, args)
                .fetch_optional(pool)
                .await?
                .map(DbRow::Pg),
        })
    }

    /// Begins a write transaction that holds the database's write lock for its whole life:
    /// `BEGIN IMMEDIATE` on SQLite, and `pg_advisory_xact_lock(lock_key)` on PostgreSQL.
    pub(crate) async fn begin_serialized(&self, lock_key: i64) -> Result<Tx<'static>, sqlx::Error> {
        match self {
            Pools::Sqlite { write, .. } => {
                Ok(Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?))
            }
            Pools::Pg(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query::<Postgres>("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock_key)
                    .execute(&mut *tx)
                    .await?;
                Ok(Tx::Pg(tx))
            }
        }
    }

    /// Runs SQL text (possibly several statements, no binds) outside a transaction, on the
    /// write connection. Returns the rows affected.
    pub(crate) async fn execute_raw(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match self {
            Pools::Sqlite { write, .. } => sqlx::raw_sql(sql).execute(write).await?.rows_affected(),
            Pools::Pg(pool) => sqlx::raw_sql(sql).execute(pool).await?.rows_affected(),
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Pools::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pools::Pg(pool) => pool.close().await,
        }
    }
}

/// An open write transaction of either backend. Dropping it rolls it back.
pub(crate) enum Tx<'c> {
    Sqlite(Transaction<'c, Sqlite>),
    Pg(Transaction<'c, Postgres>),
}

impl Tx<'_> {
    /// Runs one statement with binds; returns the rows affected.
    pub(crate) async fn execute(
        &mut self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx) => bound!(Sqlite, sql, args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Pg(tx) => bound!(Postgres, sql, args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    pub(crate) async fn fetch_optional(
        &mut self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx) => bound!(Sqlite, sql, args)
                .fetch_optional(&mut **tx)
                .await?
                .map(DbRow::Sqlite),
            Tx::Pg(tx) => bound!(Postgres, sql, args)
                .fetch_optional(&mut **tx)
                .await?
                .map(DbRow::Pg),
        })
    }

    /// Runs one statement built at run time (placeholders only, never input text); returns the
    /// rows affected.
    pub(crate) async fn execute_dyn(
        &mut self,
        sql: String,
        args: Vec<Arg>,
    ) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql);
        Ok(match self {
            Tx::Sqlite(tx) => bound!(Sqlite, sql, args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Pg(tx) => bound!(Postgres, sql, args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Runs one query built at run time (placeholders only, never input text); returns its
    /// rows.
    pub(crate) async fn fetch_all_dyn(
        &mut self,
        sql: String,
        args: Vec<Arg>,
    ) -> Result<Vec<DbRow>, sqlx::Error> {
        let sql = AssertSqlSafe(sql);
        Ok(match self {
            Tx::Sqlite(tx) => bound!(Sqlite, sql, args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Tx::Pg(tx) => bound!(Postgres, sql, args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Pg)
                .collect(),
        })
    }

    /// Runs SQL text that may hold several statements and no binds (a migration).
    pub(crate) async fn execute_script(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlx::raw_sql(sql).execute(&mut **tx).await.map(|_| ()),
            Tx::Pg(tx) => sqlx::raw_sql(sql).execute(&mut **tx).await.map(|_| ()),
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Pg(tx) => tx.commit().await,
        }
    }

    /// Rolls back, ignoring errors: a broken connection rolls back by itself.
    pub(crate) async fn rollback(self) {
        let result = match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Pg(tx) => tx.rollback().await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "rollback failed; the connection discards the transaction");
        }
    }
}
