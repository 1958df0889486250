//! End-to-end on PostgreSQL: the same binary with `--database-url postgres://…` serves, keeps
//! state across a restart, and two servers on one database share it (one bootstrap).

mod common;

use common::{ADMIN, Server, WORKSPACE};

fn base_url() -> Option<String> {
    if std::env::var("PLINTH_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("skipped: PLINTH_SKIP_POSTGRES=1");
        return None;
    }
    Some(
        std::env::var("PLINTH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    )
}

#[test]
fn serves_from_postgres_and_survives_a_restart() {
    let Some(base) = base_url() else { return };
    let db = format!("plinth_e2e_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(async {
        plinth_store::Store::connect(&base)
            .await
            .expect("postgres reachable for the e2e test")
    });
    rt.block_on(async {
        let _ = admin
            .execute_raw(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
        admin
            .execute_raw(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
    });
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{db}");
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = Server::start_in(tmp.path(), &["--database-url", &url]);
        let second = Server::start_in(tmp.path(), &["--database-url", &url]);
        s.ok(
            ADMIN,
            &[
                "apply",
                "-f",
                &common::write(tmp.path(), "ws.yaml", WORKSPACE),
            ],
        );
        // The second replica sees the first one's writes.
        let out = second.ok(ADMIN, &["get", "queues"]);
        assert!(out.contains("queue-a") && out.contains("queue-b"), "{out}");
        assert!(
            !tmp.path().join("plinth.db").exists(),
            "no SQLite file when PostgreSQL is used"
        );
        assert_eq!(s.terminate(), 0);
    }
    let s = Server::start_in(tmp.path(), &["--database-url", &url]);
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(ADMIN, &["get", "pool", "gpu-a", "-o", "json"])).unwrap();
    assert_eq!(v["spec"]["accelerator"]["count"], 8);
    let out = s.ok(ADMIN, &["audit", "verify"]);
    assert!(out.contains("audit log intact: 6 events verified"), "{out}");
    drop(s);
    rt.block_on(async {
        let _ = admin
            .execute_raw(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
        admin.close().await;
    });
}
