//! End-to-end on PostgreSQL: the same binary with `--database-url postgres://…` serves, keeps
//! state across a restart, and two servers on one database share it (one bootstrap).

mod common;

use common::{ADMIN, PgDb, Server, WORKSPACE};

#[test]
fn serves_from_postgres_and_survives_a_restart() {
    let Some(db) = PgDb::create("e2e") else {
        return;
    };
    let url = db.url.clone();
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
}
