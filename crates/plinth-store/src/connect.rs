//! Parsing a database url and opening the pools for it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use crate::Backend;
use crate::db::Pools;
use crate::error::{DbCtx, StoreError, redact};

/// How long a SQLite connection waits for another writer's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers on SQLite (WAL lets them run beside the one writer).
const SQLITE_READ_CONNECTIONS: u32 = 8;
/// Connections to PostgreSQL.
const POSTGRES_CONNECTIONS: u32 = 10;
/// How long a caller waits for the SQLite write connection (writers queue for it) before the
/// store reports the database unavailable.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a caller waits for a PostgreSQL connection (this includes reconnecting to a server
/// that went away) before the store reports the database unavailable.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed database url.
pub(crate) enum Target {
    Sqlite { path: PathBuf },
    Postgres { options: Box<PgConnectOptions> },
}

/// Parses `sqlite://PATH`, `sqlite:PATH`, `postgres://...` or `postgresql://...`. Returns the
/// target and the context (location and secrets) for error messages.
pub(crate) fn parse(url: &str) -> Result<(Target, DbCtx), StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "sqlite url {url:?} names no file; use sqlite://PATH"
            )));
        }
        if path == ":memory:" || path.starts_with(":memory:") {
            return Err(StoreError::Unavailable(format!(
                "sqlite url {url:?} asks for an in-memory database, which is not supported; \
                 use sqlite://PATH"
            )));
        }
        if path.contains('?') {
            return Err(StoreError::Unavailable(format!(
                "sqlite url {url:?} has query parameters, which are not supported; \
                 use sqlite://PATH"
            )));
        }
        let path = PathBuf::from(path);
        let ctx = DbCtx {
            backend: Backend::Sqlite,
            location: format!("sqlite database {}", path.display()),
            secrets: Vec::new(),
        };
        return Ok((Target::Sqlite { path }, ctx));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let secrets = url_secrets(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Unavailable(redact(
                format!(
                    "invalid postgres url {}: {e}",
                    redact(url.to_owned(), &secrets)
                ),
                &secrets,
            ))
        })?;
        let options = options.application_name("plinth");
        let location = match options.get_socket() {
            Some(socket) => format!(
                "postgres database {}/{}",
                socket.display(),
                options.get_database().unwrap_or(options.get_username())
            ),
            None => format!(
                "postgres database {}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or(options.get_username())
            ),
        };
        let ctx = DbCtx {
            backend: Backend::Postgres,
            location,
            secrets,
        };
        return Ok((
            Target::Postgres {
                options: Box::new(options),
            },
            ctx,
        ));
    }
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    Err(StoreError::Unavailable(format!(
        "unsupported database url scheme {scheme:?}: use sqlite://PATH or postgres://..."
    )))
}

/// The password of a postgres url (as written and percent-decoded), from the user info and from
/// a `password=` query parameter.
fn url_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            out.push(password.to_owned());
        }
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split('&') {
                if let Some(("password", value)) = pair.split_once('=') {
                    out.push(value.to_owned());
                }
            }
        }
    }
    let decoded: Vec<String> = out.iter().map(|s| percent_decode(s)).collect();
    out.extend(decoded);
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    // Longest first, so a secret that contains another is replaced whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens the pools for `target`, failing fast with the driver's own error when the database
/// cannot be reached.
pub(crate) async fn open(target: Target, ctx: &DbCtx) -> Result<Pools, StoreError> {
    match target {
        Target::Sqlite { path } => open_sqlite(&path, ctx).await,
        Target::Postgres { options } => open_postgres(*options, ctx).await,
    }
}

fn sqlite_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
        .disable_statement_logging()
}

async fn open_sqlite(path: &Path, ctx: &DbCtx) -> Result<Pools, StoreError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::Unavailable(format!(
                "{} is unavailable: cannot create directory {}: {e}",
                ctx.location,
                parent.display()
            ))
        })?;
    }
    let options = sqlite_options(path);

    // Switching a new file to WAL takes an exclusive lock that SQLite's busy timeout does not
    // wait for, so when two processes create the file at once one of them is told "busy". Do
    // it once here, retrying, before the pools open; afterwards the mode is already WAL and
    // setting it again on each connection needs no such lock.
    let deadline = Instant::now() + SQLITE_BUSY_TIMEOUT * 2;
    loop {
        match SqliteConnection::connect_with(&options).await {
            Ok(conn) => {
                if let Err(e) = conn.close().await {
                    tracing::debug!(error = %e, "closing the sqlite setup connection failed");
                }
                break;
            }
            Err(e) if is_sqlite_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(ctx.classify("opening the database", e)),
        }
    }

    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(ctx.err("opening the write connection"))?;
    let read = SqlitePoolOptions::new()
        .max_connections(SQLITE_READ_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);
    Ok(Pools::Sqlite { read, write })
}

/// SQLITE_BUSY or SQLITE_LOCKED, with any extended code.
fn is_sqlite_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

async fn open_postgres(options: PgConnectOptions, ctx: &DbCtx) -> Result<Pools, StoreError> {
    let options = options.disable_statement_logging();
    // One direct connection first: the pool retries a refused connection until its timeout
    // and then reports only "timed out", which hides the cause.
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is unavailable: connecting took longer than {}s",
                ctx.location,
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(ctx.err("connecting"))?;
    if let Err(e) = probe.close().await {
        tracing::debug!(error = %ctx.redact(e.to_string()), "closing the postgres probe connection failed");
    }
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);
    Ok(Pools::Pg(pool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        for (url, want) in [
            ("sqlite:///var/lib/p.db", "/var/lib/p.db"),
            ("sqlite://data/p.db", "data/p.db"),
            ("sqlite:p.db", "p.db"),
            ("sqlite:/abs/p.db", "/abs/p.db"),
        ] {
            match parse(url) {
                Ok((Target::Sqlite { path }, ctx)) => {
                    assert_eq!(path, PathBuf::from(want), "{url}");
                    assert_eq!(ctx.backend, Backend::Sqlite);
                }
                _ => panic!("{url} did not parse as sqlite"),
            }
        }
        for url in [
            "sqlite://",
            "sqlite::memory:",
            "sqlite://x.db?mode=rwc",
            "mysql://x",
        ] {
            assert!(
                matches!(parse(url), Err(StoreError::Unavailable(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn postgres_url_location_hides_password() {
        let (target, ctx) = match parse("postgres://bob:s%40cret@db.example:5433/plinth") {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert!(matches!(target, Target::Postgres { .. }));
        assert_eq!(ctx.location, "postgres database db.example:5433/plinth");
        assert!(ctx.secrets.contains(&"s%40cret".to_owned()));
        assert!(ctx.secrets.contains(&"s@cret".to_owned()));
        assert_eq!(
            ctx.redact("pw s@cret and s%40cret".into()),
            "pw *** and ***"
        );
    }

    #[test]
    fn secrets_from_query() {
        let s = url_secrets("postgresql://u@h/db?sslmode=disable&password=topsecret");
        assert_eq!(s, vec!["topsecret".to_owned()]);
        assert!(url_secrets("postgres://u@h/db").is_empty());
    }
}
