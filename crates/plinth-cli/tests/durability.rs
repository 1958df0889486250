//! End-to-end: the audit chain catches tampering done directly in the database, and `kill -9`
//! during a burst of concurrent applies loses no acknowledged write.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{ADMIN, Server};

#[test]
fn audit_verify_names_a_row_altered_in_the_database() {
    let s = Server::with_workspace();
    let out = s.ok(ADMIN, &["audit", "verify"]);
    assert!(out.contains("audit log intact: 6 events verified"), "{out}");
    let log = s.ok(ADMIN, &["audit", "log", "--kind", "Queue"]);
    assert!(
        log.contains("resource.create") && log.contains("Queue/queue-a"),
        "{log}"
    );

    // Change who did event 3, behind the server's back.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = plinth_store::Store::connect(&format!("sqlite://{}", s.db_path().display()))
            .await
            .unwrap();
        let n = store
            .execute_raw("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
            .await
            .unwrap();
        assert_eq!(n, 1);
        store.close().await;
    });
    let (code, out, err) = s.cli(ADMIN, &["audit", "verify"]);
    assert_eq!(code, 8, "tampering exits 8\n{out}{err}");
    assert!(out.contains("first bad event 3"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&s.cli(ADMIN, &["audit", "verify", "-o", "json"]).1).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad"]["seq"], 3);
    assert_eq!(v["checked"], 2);
}

#[test]
fn kill_9_during_concurrent_applies_loses_no_acknowledged_write() {
    const TOTAL: usize = 1000;
    const KILL_AFTER: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    let url = s.url.clone();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let handle = {
        let acked = acked.clone();
        let count = count.clone();
        std::thread::spawn(move || {
            rt.block_on(async move {
                let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
                let limit = Arc::new(tokio::sync::Semaphore::new(64));
                let mut tasks = Vec::new();
                for i in 0..TOTAL {
                    let (client, acked, count, limit, url, kill_tx) = (client.clone(), acked.clone(), count.clone(), limit.clone(), url.clone(), kill_tx.clone());
                    tasks.push(tokio::spawn(async move {
                        let _permit = limit.acquire().await.unwrap();
                        let name = format!("team-{i:04}");
                        let body = format!("apiVersion: plinth/v1\nkind: Team\nmetadata: {{name: {name}}}\nspec: {{displayName: \"Team {i}\"}}\n");
                        let resp = client.post(format!("{url}/api/v1/apply")).bearer_auth(ADMIN).header("content-type", "application/yaml").body(body).send().await;
                        if let Ok(r) = resp
                            && r.status() == 200
                            && r.json::<serde_json::Value>().await.is_ok()
                        {
                            acked.lock().unwrap().push(name);
                            if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                                let _ = kill_tx.send(());
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
    };
    kill_rx.recv().unwrap();
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    handle.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER, "{} acknowledged", acked.len());
    assert!(
        acked.len() < TOTAL,
        "the kill must land while applies are in flight ({} acked)",
        acked.len()
    );

    // Restart on the same data dir: every acknowledged team is there, and the chain is intact.
    drop(s);
    let s = Server::start_in(tmp.path(), &[]);
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(ADMIN, &["get", "teams", "-o", "json"])).unwrap();
    let stored: std::collections::BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let out = s.ok(ADMIN, &["audit", "verify"]);
    assert!(out.contains("audit log intact"), "{out}");
    println!(
        "acknowledged before kill -9: {}, stored after restart: {}",
        acked.len(),
        stored.len()
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let s = Server::start();
    s.ok(ADMIN, &["whoami"]);
    assert_eq!(s.terminate(), 0);
}
