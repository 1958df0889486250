//! Shared by the store's test suites: fresh stores for each backend (SQLite in a temporary
//! directory; a fresh PostgreSQL database per test at `PLINTH_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, dropped afterwards; `PLINTH_SKIP_POSTGRES=1`
//! skips PostgreSQL) and the macro that runs each check on both.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod harness {
    //! Fresh stores for each backend, and cleanup that runs even when a check panics.
    #![allow(dead_code)]

    use std::future::Future;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use plinth_store::{Backend, Store};
    use sqlx::Connection as _;

    const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// What a check gets: a connected store and the url it was opened with.
    pub struct Ctx {
        pub store: Store,
        pub url: String,
        pub backend: Backend,
        blank: Blank,
    }

    #[derive(Clone)]
    enum Blank {
        Sqlite(PathBuf),
        Postgres {
            base: String,
            created: Arc<Mutex<Vec<String>>>,
        },
    }

    impl Ctx {
        /// The url of another empty database (not yet migrated), cleaned up with this one.
        pub async fn blank_url(&self) -> String {
            match &self.blank {
                Blank::Sqlite(dir) => {
                    let path = dir.join(format!("blank-{}.db", uuid::Uuid::now_v7().simple()));
                    format!("sqlite://{}", path.display())
                }
                Blank::Postgres { base, created } => {
                    let name = create_database(base).await;
                    created.lock().unwrap().push(name.clone());
                    with_database(base, &name)
                }
            }
        }
    }

    pub async fn run_sqlite<F, Fut>(check: F)
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("nested").join("plinth.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        let ctx = Ctx {
            store,
            url,
            backend: Backend::Sqlite,
            blank: Blank::Sqlite(dir.path().to_owned()),
        };
        let result = tokio::spawn(check(ctx)).await;
        drop(dir);
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    pub async fn run_postgres<F, Fut>(check: F)
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if std::env::var("PLINTH_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("skipped: PLINTH_SKIP_POSTGRES=1");
            return;
        }
        let base = std::env::var("PLINTH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = create_database(&base).await;
        let created = Arc::new(Mutex::new(vec![name.clone()]));
        let url = with_database(&base, &name);
        let store = match Store::connect(&url).await {
            Ok(s) => s,
            Err(e) => {
                drop_database(&base, &name).await;
                panic!("connecting the store to {name} failed: {e}");
            }
        };
        assert_eq!(store.backend(), Backend::Postgres);
        let ctx = Ctx {
            store: store.clone(),
            url,
            backend: Backend::Postgres,
            blank: Blank::Postgres {
                base: base.clone(),
                created: created.clone(),
            },
        };
        let result = tokio::spawn(check(ctx)).await;
        store.close().await;
        let names = created.lock().unwrap().clone();
        for n in names {
            drop_database(&base, &n).await;
        }
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    async fn admin(base: &str) -> sqlx::PgConnection {
        match sqlx::PgConnection::connect(base).await {
            Ok(c) => c,
            Err(e) => panic!(
                "postgres is not reachable at {} (set by PLINTH_TEST_POSTGRES_URL, default \
                 {DEFAULT_POSTGRES_URL}): {e}; start a server or set PLINTH_SKIP_POSTGRES=1 to \
                 skip the postgres conformance tests",
                without_password(base)
            ),
        }
    }

    /// Creates `plinth_t_<random>` and returns its name.
    async fn create_database(base: &str) -> String {
        let name = format!("plinth_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = admin(base).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name} failed: {e}"));
        let _ = conn.close().await;
        name
    }

    /// Drops a test database, best effort.
    async fn drop_database(base: &str, name: &str) {
        let Ok(mut conn) = sqlx::PgConnection::connect(base).await else {
            return;
        };
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            eprintln!("dropping test database {name} failed: {e}");
        }
        let _ = conn.close().await;
    }

    /// `url` with any password in its user info replaced by `***`.
    fn without_password(url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        }
    }

    /// `base` with its database replaced by `db`.
    pub fn with_database(base: &str, db: &str) -> String {
        let (scheme, rest) = base.split_once("://").unwrap();
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, format!("?{q}")),
            None => (rest, String::new()),
        };
        let authority = rest.split('/').next().unwrap();
        format!("{scheme}://{authority}/{db}{query}")
    }
}

/// Generates `sqlite::<check>` and `postgres::<check>` tests for every check.
macro_rules! backend_tests {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    crate::common::harness::run_sqlite(crate::$check).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    crate::common::harness::run_postgres(crate::$check).await;
                }
            )*
        }
    };
}
