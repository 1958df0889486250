//! The store's error type and the mapping of driver errors onto it.

use plinth_types::ErrorCode;

use crate::Backend;

/// What went wrong in the store. Every message is lowercase and says what was wrong and with
/// which input; none contains a password from the database url.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A precondition failed or the object changed concurrently.
    #[error("{0}")]
    Conflict(String),
    /// The named object, token or key does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object with this identity already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The database cannot be reached or is busy.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data does not decode (a damaged row, a schema from a newer release).
    #[error("{0}")]
    Corrupt(String),
    /// A bug or an unexpected database failure.
    #[error("{0}")]
    Internal(String),
}

impl StoreError {
    /// The API error code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Corrupt(_) | StoreError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The message without the variant.
    pub fn message(&self) -> &str {
        match self {
            StoreError::Conflict(m)
            | StoreError::NotFound(m)
            | StoreError::AlreadyExists(m)
            | StoreError::Unavailable(m)
            | StoreError::Corrupt(m)
            | StoreError::Internal(m) => m,
        }
    }
}

/// Which database an error came from, for messages, and the secrets to keep out of them.
#[derive(Debug, Clone)]
pub(crate) struct DbCtx {
    pub(crate) backend: Backend,
    /// E.g. `sqlite database /var/lib/plinth/plinth.db` or
    /// `postgres database 127.0.0.1:5432/plinth` (never the password).
    pub(crate) location: String,
    /// Strings (passwords) that must never appear in a message.
    pub(crate) secrets: Vec<String>,
}

impl DbCtx {
    /// A mapper for `map_err`: `what` says what the store was doing, e.g. `reading Pool "a"`.
    pub(crate) fn err<'a>(&'a self, what: &'a str) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
        move |e| self.classify(what, e)
    }

    /// Removes every secret from `msg`.
    pub(crate) fn redact(&self, msg: String) -> String {
        redact(msg, &self.secrets)
    }

    pub(crate) fn classify(&self, what: &str, e: sqlx::Error) -> StoreError {
        let kind = self.kind_of(&e);
        let msg = match kind {
            Kind::Unavailable => format!("{} is unavailable ({what}): {e}", self.location),
            _ => format!("{what} failed on {}: {e}", self.location),
        };
        let msg = self.redact(msg);
        match kind {
            Kind::Unavailable => StoreError::Unavailable(msg),
            Kind::Conflict => StoreError::Conflict(msg),
            Kind::AlreadyExists => StoreError::AlreadyExists(msg),
            Kind::Corrupt => StoreError::Corrupt(msg),
            Kind::Internal => StoreError::Internal(msg),
        }
    }

    fn kind_of(&self, e: &sqlx::Error) -> Kind {
        use sqlx::Error as E;
        match e {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => Kind::Unavailable,
            E::ColumnDecode { .. } | E::Decode(_) => Kind::Corrupt,
            E::Database(d) => {
                let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
                match self.backend {
                    Backend::Sqlite => sqlite_kind(&code, d.kind()),
                    Backend::Postgres => postgres_kind(&code, d.kind()),
                }
            }
            _ => Kind::Internal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unavailable,
    Conflict,
    AlreadyExists,
    Corrupt,
    Internal,
}

/// `code` is SQLite's extended result code in decimal; the primary code is its low byte.
fn sqlite_kind(code: &str, kind: sqlx::error::ErrorKind) -> Kind {
    let primary = code.parse::<i64>().map(|c| c & 0xff).unwrap_or(-1);
    match primary {
        // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
        5 | 6 | 8 | 10 | 13 | 14 | 15 => Kind::Unavailable,
        // CORRUPT, NOTADB
        11 | 26 => Kind::Corrupt,
        _ if kind == sqlx::error::ErrorKind::UniqueViolation => Kind::AlreadyExists,
        _ => Kind::Internal,
    }
}

/// `code` is PostgreSQL's SQLSTATE.
fn postgres_kind(code: &str, kind: sqlx::error::ErrorKind) -> Kind {
    match code {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Kind::Conflict,
        // invalid_catalog_name: the database does not exist
        "3D000" => Kind::Unavailable,
        _ if code.starts_with("08") // connection exception
            || code.starts_with("28") // invalid authorization
            || code.starts_with("53") // insufficient resources
            || code.starts_with("57P") // operator intervention: shutdown, cannot connect now
            || code == "25006" /* read_only_sql_transaction (a standby) */ =>
        {
            Kind::Unavailable
        }
        "XX001" | "XX002" => Kind::Corrupt,
        _ if kind == sqlx::error::ErrorKind::UniqueViolation => Kind::AlreadyExists,
        _ => Kind::Internal,
    }
}

/// Replaces every non-empty secret in `msg` with `***`.
pub(crate) fn redact(mut msg: String, secrets: &[String]) -> String {
    for s in secrets {
        if !s.is_empty() && msg.contains(s.as_str()) {
            msg = msg.replace(s.as_str(), "***");
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_as_documented() {
        assert_eq!(StoreError::Conflict("x".into()).code(), ErrorCode::Conflict);
        assert_eq!(StoreError::NotFound("x".into()).code(), ErrorCode::NotFound);
        assert_eq!(
            StoreError::AlreadyExists("x".into()).code(),
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            StoreError::Unavailable("x".into()).code(),
            ErrorCode::Unavailable
        );
        assert_eq!(StoreError::Corrupt("x".into()).code(), ErrorCode::Internal);
        assert_eq!(StoreError::Internal("x".into()).code(), ErrorCode::Internal);
    }

    #[test]
    fn redact_removes_secrets() {
        let m = redact(
            "user:hunter2@host".into(),
            &["hunter2".into(), String::new()],
        );
        assert_eq!(m, "user:***@host");
    }

    #[test]
    fn sqlite_busy_is_unavailable() {
        assert_eq!(
            sqlite_kind("5", sqlx::error::ErrorKind::Other),
            Kind::Unavailable
        );
        // SQLITE_BUSY_SNAPSHOT = 517
        assert_eq!(
            sqlite_kind("517", sqlx::error::ErrorKind::Other),
            Kind::Unavailable
        );
        // SQLITE_CONSTRAINT_PRIMARYKEY = 1555
        assert_eq!(
            sqlite_kind("1555", sqlx::error::ErrorKind::UniqueViolation),
            Kind::AlreadyExists
        );
    }

    #[test]
    fn postgres_codes() {
        assert_eq!(
            postgres_kind("08006", sqlx::error::ErrorKind::Other),
            Kind::Unavailable
        );
        assert_eq!(
            postgres_kind("57P01", sqlx::error::ErrorKind::Other),
            Kind::Unavailable
        );
        assert_eq!(
            postgres_kind("40001", sqlx::error::ErrorKind::Other),
            Kind::Conflict
        );
        assert_eq!(
            postgres_kind("23505", sqlx::error::ErrorKind::UniqueViolation),
            Kind::AlreadyExists
        );
        assert_eq!(
            postgres_kind("42601", sqlx::error::ErrorKind::Other),
            Kind::Internal
        );
    }
}
