//! End-to-end: local replicas. The real `plinth serve` runs a Deployment version's replicas as
//! `plinth demo-model-server` processes through its executor and autoscales them: a cold start
//! from zero with the waiting requests answered, scale-up under concurrent load, scale to zero
//! after idle, a crashed replica replaced, a changed spec and a deleted Deployment stopping the
//! processes (their pids gone), replicas of a killed server stopped by the next start, SIGTERM
//! stopping them all, and usage rows with their tags: one per interval while a replica runs and
//! one for the rest of its life, tiling it once across a killed server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ADMIN, Auth, Server, WORKSPACE, bin, get_text, http_json, runtime, token};
use serde_json::{Value, json};

/// Kills, when dropped, every process group a replica of `data_dir` ran in (supervisors run
/// in their own groups and outlive a test that failed half-way).
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pids in recorded_pids(&self.0) {
            for p in pids.into_iter().filter(|&p| p > 1) {
                // kill(1) of a process group and a pid this test started. The `--` matters:
                // procps-ng 4.0.2 reads `kill -KILL -PGID` as `kill -KILL -1` (every process).
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{p}")])
                    .status();
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
        }
    }
}

/// The pids (command and supervisor) recorded for every replica under `data_dir`.
fn recorded_pids(data_dir: &Path) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let Ok(jobs) = std::fs::read_dir(data_dir.join("replicas").join("jobs")) else {
        return out;
    };
    for j in jobs.flatten() {
        let Ok(text) = std::fs::read_to_string(j.path().join("1").join("pid.json")) else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let pids: Vec<u32> = ["pgid", "supervisor_pid"]
            .iter()
            .filter_map(|k| v[*k].as_u64())
            .map(|p| p as u32)
            .collect();
        out.push(pids);
    }
    out
}

fn alive(pid: u64) -> bool {
    // A zombie is dead for this purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_for<T>(what: &str, secs: u64, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The serving pool of these tests: on demand (inference never runs on spot), one node with
/// two GPUs, and team-a's queue on it; team-b's queue shares it for jobs.
const SERVING: &str = r#"
apiVersion: plinth/v1
kind: Pool
metadata: {name: serve-a}
spec: {nodes: 1, cpusPerNode: 16, memoryGibPerNode: 64, accelerator: {type: nvidia-l4, count: 2}, procurement: on_demand, pricePerGpuHour: 1.0, pricePerNodeHour: 3.2}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: serving-a}
spec: {team: team-a, quotas: [{pool: serve-a, gpus: 2}]}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: batch-b}
spec: {team: team-b, quotas: [{pool: serve-a, gpus: 2}]}
"#;

/// The shared test workspace and the serving pool.
fn workspace(s: &Server) {
    s.apply("workspace.yaml", WORKSPACE);
    s.apply("serving.yaml", SERVING);
}

fn start(dir: &Path) -> (Server, String) {
    start_with(dir, &[])
}

/// `plinth serve` on `dir` with its gateway on a free port and `extra` flags; returns the
/// server and the gateway's URL.
fn start_with(dir: &Path, extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--gateway-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let s = Server::start_in(dir, &args);
    let (status, gw) = http_json(&s, "GET", "/api/v1/gateway", Auth::Bearer(ADMIN), None);
    assert_eq!(status, 200, "{gw}");
    let url = gw["url"].as_str().expect("gateway url").to_string();
    (s, url)
}

/// Applies Deployment `chat` (team-a, model demo-chat) whose v1 runs `plinth demo-model-server
/// --name NAME --delay-ms DELAY` replicas with `autoscaling`.
fn apply_chat(s: &Server, name: &str, delay_ms: u64, autoscaling: &str) {
    apply_chat_loading(s, name, delay_ms, 0, autoscaling);
}

/// Like `apply_chat`, each replica asking for `gpus` GPUs.
fn apply_chat_gpus(s: &Server, gpus: u32, autoscaling: &str) {
    apply_chat_spec(s, "v1", 0, 0, gpus, "serve-a", autoscaling);
}

/// Like `apply_chat`, the replicas taking `startup_ms` to listen (a model loading).
fn apply_chat_loading(s: &Server, name: &str, delay_ms: u64, startup_ms: u64, autoscaling: &str) {
    apply_chat_spec(s, name, delay_ms, startup_ms, 0, "serve-a", autoscaling);
}

fn apply_chat_spec(
    s: &Server,
    name: &str,
    delay_ms: u64,
    startup_ms: u64,
    gpus: u32,
    pool: &str,
    autoscaling: &str,
) {
    let gpus = if gpus > 0 {
        format!(", gpus: {gpus}")
    } else {
        String::new()
    };
    let doc = format!(
        r#"apiVersion: plinth/v1
kind: Deployment
metadata: {{name: chat}}
spec:
  team: team-a
  models: [demo-chat]
  versions:
    - name: v1
      weight: 1
      replicas:
        command: ["{bin}", demo-model-server, --listen, "127.0.0.1:{{port}}", --name, {name}, --delay-ms, "{delay_ms}", --startup-delay-ms, "{startup_ms}"]
        pool: {pool}
        resources: {{cpus: 2, memoryGib: 4{gpus}}}
      autoscaling: {autoscaling}
"#,
        bin = bin()
    );
    s.apply("chat.yaml", &doc);
}

/// The `replicas` view of `chat` v1 (null until the gateway serves it).
fn replicas(s: &Server) -> Value {
    let (code, st) = http_json(
        s,
        "GET",
        "/api/v1/deployments/chat/status",
        Auth::Bearer(ADMIN),
        None,
    );
    if code != 200 {
        return Value::Null;
    }
    st["versions"][0]["replicas"].clone()
}

fn ready_pids(r: &Value) -> Vec<u64> {
    r["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["state"] == "ready")
        .filter_map(|x| x["pid"].as_u64())
        .collect()
}

/// `n` concurrent chat requests; each answer's status and JSON body.
fn concurrent_chats(gateway: &str, key: &str, n: usize) -> Vec<(u16, Value)> {
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (client, url, key) = (client.clone(), format!("{gateway}/chat/completions"), key.to_string());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi there"}]}))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

fn answer(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The replica usage rows stored so far.
fn replica_rows(s: &Server) -> Vec<plinth_store::usage::UsageRow> {
    runtime().block_on(async {
        let store = plinth_store::Store::connect(&format!("sqlite://{}", s.db_path().display()))
            .await
            .unwrap();
        let rows = store
            .list_usage("2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z")
            .await
            .unwrap();
        store.close().await;
        rows.into_iter().filter(|r| r.source == "replica").collect()
    })
}

#[test]
fn replicas_cold_start_scale_up_and_scale_to_zero_with_usage_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let _reaper = Reaper(tmp.path().to_path_buf());
    let (s, gateway) = start(tmp.path());
    workspace(&s);
    let key = token(&s, "team-a", "member");
    apply_chat(
        &s,
        "v1",
        400,
        "{minReplicas: 0, maxReplicas: 3, targetConcurrency: 1, scaleDownAfterSeconds: 1, scaleToZeroAfterSeconds: 3, queueTimeoutSeconds: 60}",
    );
    // Scaled to zero from the start: nothing runs until a request comes.
    let r = wait_for("the deployment served", 30, || {
        let r = replicas(&s);
        (r.is_object() && r["max"] == 3).then_some(r)
    });
    assert_eq!(
        (r["desired"].as_u64(), r["ready"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!((r["min"].as_u64(), r["max"].as_u64()), (Some(0), Some(3)));
    std::thread::sleep(Duration::from_millis(600));
    assert!(replicas(&s)["replicas"].as_array().unwrap().is_empty());

    // Cold start: three requests arrive at once, wait in the queue while a replica starts,
    // and are all answered by it.
    let t0 = Instant::now();
    let answers = concurrent_chats(&gateway, &key, 3);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(answer(body), "hello from v1");
    }
    assert!(t0.elapsed() < Duration::from_secs(60));

    // Scale up under load: 12 requests in flight at a time (each takes 400 ms) with a target
    // of 1 per replica: the controller goes to its maximum, 3, all ready and serving.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, gateway, key) = (stop.clone(), gateway.clone(), key.clone());
        std::thread::spawn(move || {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (status, body) in concurrent_chats(&gateway, &key, 12) {
                    assert_eq!(status, 200, "{body}");
                    served += 1;
                }
            }
            served
        })
    };
    let at_max = wait_for("three ready replicas under load", 60, || {
        let r = replicas(&s);
        (r["ready"] == 3 && ready_pids(&r).len() == 3).then_some(r)
    });
    assert_eq!(at_max["desired"], 3, "{at_max}");
    let pids = ready_pids(&at_max);
    for p in &pids {
        assert!(alive(*p), "replica pid {p} runs");
    }
    // The status shows it in the CLI, the console and the metrics.
    let out = s.ok(ADMIN, &["deployment", "status", "chat"]);
    assert!(out.contains("3/3 (0-3)"), "{out}");
    assert!(out.contains("ready pid"), "{out}");
    let page = get_text(&s, "/console/deployments", Auth::Session(ADMIN));
    assert!(
        page.contains("local replicas: 3 ready of 3 desired"),
        "{page}"
    );
    let metrics = get_text(&s, "/metrics", Auth::None);
    assert!(
        metrics.contains(
            "plinth_gateway_replicas{deployment=\"chat\",version=\"v1\",state=\"ready\"} 3"
        ),
        "{metrics}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.join().unwrap();
    assert!(served >= 12);

    // Idle: down to zero within scaleToZeroAfterSeconds (3 s) and the drain; the processes
    // are gone.
    wait_for("scale to zero", 30, || {
        let r = replicas(&s);
        (r["desired"] == 0 && r["replicas"].as_array().is_some_and(Vec::is_empty)).then_some(())
    });
    for p in &pids {
        wait_for("a scaled-away replica's process gone", 15, || {
            (!alive(*p)).then_some(())
        });
    }

    // One usage row per replica's lifetime: serving on serve-a (on demand), 2 CPUs and 4 GiB asked,
    // tagged with team, deployment, version and model.
    let rows = wait_for("usage rows of the stopped replicas", 15, || {
        let rows = replica_rows(&s);
        (rows.len() >= 3).then_some(rows)
    });
    for row in &rows {
        assert_eq!(row.workload, "serving");
        assert_eq!(row.workload_name, "chat");
        assert_eq!(row.pool, "serve-a");
        assert_eq!(row.procurement, "on_demand");
        assert_eq!(row.request_cpus, 2.0);
        assert_eq!(row.request_memory_gib, 4.0);
        assert_eq!(row.request_gpus, 0.0);
        assert_eq!(row.tags["team"], "team-a");
        assert_eq!(row.tags["deployment"], "chat");
        assert_eq!(row.tags["version"], "v1");
        assert_eq!(row.tags["model"], "demo-chat");
        assert_eq!(row.model_version.as_deref(), Some("v1"));
        assert_eq!(row.end_reason.as_deref(), Some("cancel"));
        assert!(row.end > row.start, "{row:?}");
    }
    assert_eq!(s.terminate(), 0);
}

#[test]
fn crashed_replicas_are_replaced_changes_roll_out_deletes_stop_and_a_restart_adopts() {
    let tmp = tempfile::tempdir().unwrap();
    let _reaper = Reaper(tmp.path().to_path_buf());
    let (s, gateway) = start(tmp.path());
    workspace(&s);
    let key = token(&s, "team-a", "member");
    apply_chat(&s, "v1", 0, "{minReplicas: 1, maxReplicas: 1}");
    let first = wait_for("one ready replica", 60, || {
        let p = ready_pids(&replicas(&s));
        (p.len() == 1).then(|| p[0])
    });
    let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
    assert_eq!((status, answer(&body).as_str()), (200, "hello from v1"));

    // A crash (SIGKILL of the model server) is noticed and the replica replaced.
    std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    let (second, r) = wait_for("a replacement replica", 60, || {
        let r = replicas(&s);
        let p = ready_pids(&r);
        (p.len() == 1 && p[0] != first).then(|| (p[0], r))
    });
    assert!(r["restarts"].as_u64() >= Some(1), "{r}");
    assert!(
        r["lastProblem"]
            .as_str()
            .unwrap_or_default()
            .contains("signal 9"),
        "{r}"
    );
    let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
    assert_eq!((status, answer(&body).as_str()), (200, "hello from v1"));

    // A changed replica spec replaces the processes without a gap: the new replica takes
    // 3 s to load, and meanwhile the old one (outgoing) keeps answering; then it drains.
    apply_chat_loading(&s, "v1b", 0, 3000, "{minReplicas: 1, maxReplicas: 1}");
    let r = wait_for("the old replica outgoing beside a starting one", 30, || {
        let r = replicas(&s);
        let states: Vec<String> = r["replicas"]
            .as_array()?
            .iter()
            .map(|x| x["state"].as_str().unwrap_or_default().to_string())
            .collect();
        (states.contains(&"outgoing".to_string()) && states.contains(&"starting".to_string()))
            .then_some(r)
    });
    assert!(alive(second), "{r}");
    let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
    assert_eq!(
        (status, answer(&body).as_str()),
        (200, "hello from v1"),
        "the old spec answers while the new one loads: {body}"
    );
    let third = wait_for("the changed replica", 60, || {
        let r = replicas(&s);
        let p = ready_pids(&r);
        (p.len() == 1 && p[0] != second).then(|| p[0])
    });
    wait_for("the old replica gone", 15, || {
        (!alive(second)).then_some(())
    });
    let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
    assert_eq!((status, answer(&body).as_str()), (200, "hello from v1b"));

    // Deleting the Deployment stops its replicas.
    s.ok(ADMIN, &["delete", "deployment", "chat"]);
    wait_for("the deleted deployment's replica gone", 15, || {
        (!alive(third)).then_some(())
    });

    // A server killed with SIGKILL leaves its replica running; the next start adopts it (its
    // version's spec is unchanged): the same process is probed, then serves again, and no
    // second one starts.
    apply_chat(&s, "v1", 0, "{minReplicas: 1, maxReplicas: 1}");
    let orphan = wait_for("a ready replica again", 60, || {
        let p = ready_pids(&replicas(&s));
        (p.len() == 1).then(|| p[0])
    });
    let data_dir = s.data_dir.clone();
    drop(s); // SIGKILL
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(orphan), "the replica outlives a killed server");
    let (s, gateway) = start(&data_dir);
    let r = wait_for("the previous run's replica adopted", 60, || {
        let r = replicas(&s);
        (ready_pids(&r) == vec![orphan]).then_some(r)
    });
    assert_eq!(r["replicas"].as_array().map(Vec::len), Some(1), "{r}");
    let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
    assert_eq!((status, answer(&body).as_str()), (200, "hello from v1"));
    assert!(alive(orphan));
    let fresh = orphan;

    // Usage rows: every replica ended so far, the crashed one included.
    let rows = wait_for("usage rows", 15, || {
        let rows = replica_rows(&s);
        (rows.len() >= 3).then_some(rows)
    });
    let reasons: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.end_reason.as_deref())
        .collect();
    assert!(reasons.contains(&"failed"), "the crash: {reasons:?}");

    // SIGTERM stops the server and its replicas.
    assert_eq!(s.terminate(), 0);
    wait_for("the replica stopped with the server", 15, || {
        (!alive(fresh)).then_some(())
    });
}

#[test]
fn requests_get_503_when_no_replica_gets_ready_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let _reaper = Reaper(tmp.path().to_path_buf());
    let (s, gateway) = start(tmp.path());
    workspace(&s);
    let key = token(&s, "team-a", "member");
    // A replica whose program does not exist never gets ready.
    let doc = r#"apiVersion: plinth/v1
kind: Deployment
metadata: {name: chat}
spec:
  team: team-a
  models: [demo-chat]
  versions:
    - name: v1
      weight: 1
      replicas: {command: [/nonexistent/model-server, "{port}"]}
      autoscaling: {minReplicas: 1, queueTimeoutSeconds: 2}
"#;
    s.apply("chat.yaml", doc);
    wait_for("the deployment served", 30, || {
        replicas(&s).is_object().then_some(())
    });
    let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "no_replica_available");
    let r = wait_for("the start failure reported", 30, || {
        let r = replicas(&s);
        r["lastProblem"].is_string().then_some(r)
    });
    assert!(
        r["lastProblem"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/model-server"),
        "{r}"
    );
    // A bad replicas block is refused at apply, naming the field.
    let bad = doc.replace("queueTimeoutSeconds: 2", "queueTimeoutSeconds: 0");
    let file = common::write(&s.data_dir, "bad.yaml", &bad);
    let (code, _, err) = s.cli(ADMIN, &["apply", "-f", &file]);
    assert_ne!(code, 0);
    assert!(
        err.contains("spec.versions[0].autoscaling.queueTimeoutSeconds"),
        "{err}"
    );
    assert_eq!(s.terminate(), 0);
}

/// Starts `plinth serve` on `dir` with a config file setting `replica_usage_interval: 1s`.
fn start_metering_every_second(dir: &Path) -> (Server, String) {
    let config = dir.join("server-config.yaml");
    std::fs::write(&config, "replica_usage_interval: 1s\n").unwrap();
    start_with(dir, &["--config", config.to_str().unwrap()])
}

/// The rows of one replica (`replica/<id>` and `replica/<id>/<n>`), in time order.
fn rows_of(s: &Server, id: &str) -> Vec<plinth_store::usage::UsageRow> {
    let whole = format!("replica/{id}");
    let part = format!("replica/{id}/");
    let mut rows: Vec<_> = replica_rows(s)
        .into_iter()
        .filter(|r| r.id == whole || r.id.starts_with(&part))
        .collect();
    rows.sort_by(|a, b| a.start.cmp(&b.start));
    rows
}

#[test]
fn a_running_replica_writes_its_usage_each_interval_and_is_adopted_after_a_kill_without_a_lost_or_repeated_stretch()
 {
    let tmp = tempfile::tempdir().unwrap();
    let _reaper = Reaper(tmp.path().to_path_buf());
    let (s, _gateway) = start_metering_every_second(tmp.path());
    workspace(&s);
    // serve-a prices its nodes (3.20 an hour for 16 cores), so a CPU-only replica has a cost.
    apply_chat(&s, "v1", 0, "{minReplicas: 1, maxReplicas: 1}");
    let (id, pid) = wait_for("one ready replica", 60, || {
        let r = replicas(&s);
        let x = r["replicas"].as_array()?.first()?.clone();
        (x["state"] == "ready").then(|| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["pid"].as_u64().unwrap(),
            )
        })
    });
    // While it runs, a row per second for the stretch since the last one: numbered, without
    // an end reason, each starting where the one before ended.
    let running = wait_for("three running stretches", 30, || {
        let rows = rows_of(&s, &id);
        (rows.len() >= 3).then_some(rows)
    });
    assert!(alive(pid), "the replica still runs");
    for (i, r) in running.iter().enumerate() {
        assert_eq!(r.id, format!("replica/{id}/{}", i + 1), "{running:?}");
        assert_eq!(r.end_reason, None, "{r:?}");
        assert_eq!(r.workload, "serving");
        assert_eq!(r.tags["deployment"], "chat");
        assert_eq!(r.request_cpus, 2.0);
        assert!(r.end > r.start, "{r:?}");
        if i > 0 {
            assert_eq!(r.start, running[i - 1].end, "{running:?}");
        }
    }
    // Its serving cost shows while it runs: the cost report has spend for chat's team.
    let report: Value =
        serde_json::from_str(&s.ok(ADMIN, &["cost", "report", "--by", "team", "-o", "json"]))
            .unwrap();
    let team_a = report["report"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == json!(["team-a"]) && r["idle"] == false)
        .cloned()
        .unwrap_or_else(|| panic!("no team-a spend yet: {report}"));
    assert!(team_a["cost"].as_f64().unwrap() > 0.0, "{team_a}");

    // SIGKILL of the server: the replica outlives it and the next start adopts it; its rows
    // go on from where the stretches ended. Deleting the deployment then stops it and writes
    // the rest of its life, so the rows tile its life once.
    let data_dir = s.data_dir.clone();
    drop(s);
    let (s, _gateway) = start_metering_every_second(&data_dir);
    wait_for("the previous run's replica adopted", 60, || {
        (ready_pids(&replicas(&s)) == vec![pid]).then_some(())
    });
    wait_for("a running stretch written after the restart", 30, || {
        (rows_of(&s, &id).len() > running.len()).then_some(())
    });
    assert!(alive(pid), "the adopted replica still runs");
    s.ok(ADMIN, &["delete", "deployment", "chat"]);
    wait_for("the replica stopped with its deployment", 30, || {
        (!alive(pid)).then_some(())
    });
    let rows = wait_for("the replica's last row", 30, || {
        let rows = rows_of(&s, &id);
        rows.iter()
            .any(|r| r.id == format!("replica/{id}"))
            .then_some(rows)
    });
    let last = rows.last().unwrap();
    assert_eq!(last.id, format!("replica/{id}"), "{rows:?}");
    assert_eq!(last.end_reason.as_deref(), Some("cancel"), "{last:?}");
    for w in rows.windows(2) {
        assert_eq!(
            w[1].start, w[0].end,
            "stretches overlap or leave a gap: {rows:?}"
        );
    }
    assert!(rows.len() > running.len() + 1, "{rows:?}");
    assert_eq!(s.terminate(), 0);
}

fn job_state(s: &Server, tok: &str, name: &str) -> Value {
    serde_json::from_str(&s.ok(tok, &["job", "describe", name, "-o", "json"])).unwrap()
}

fn last_problem(s: &Server) -> String {
    replicas(s)["lastProblem"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn replicas_are_admitted_by_the_job_scheduler_and_never_share_a_gpu_with_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let _reaper = Reaper(tmp.path().to_path_buf());
    let (s, gateway) = start(tmp.path());
    workspace(&s);
    let key = token(&s, "team-a", "member");
    let b = token(&s, "team-b", "member");

    // One replica with one GPU: admitted in team-a's queue on serve-a (the only one of the
    // team with a quota there), on one of the node's two GPUs.
    apply_chat_gpus(&s, 1, "{minReplicas: 1, maxReplicas: 1}");
    let r = wait_for("one ready replica", 60, || {
        let r = replicas(&s);
        (ready_pids(&r).len() == 1).then_some(r)
    });
    let replica_gpu = r["replicas"][0]["gpus"][0].as_u64().expect("a GPU") as u32;
    assert_eq!(r["replicas"][0]["gpus"].as_array().unwrap().len(), 1, "{r}");
    let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
    assert_eq!((status, answer(&body).as_str()), (200, "hello from v1"));
    // The queue's usage counts it.
    let page = get_text(&s, "/console/queues", Auth::Session(ADMIN));
    assert!(page.contains("serve-a: 1 GPUs"), "{page}");

    // A job of team-b wanting both GPUs waits: the replica holds one.
    s.ok(
        &b,
        &[
            "job", "submit", "--team", "team-b", "--queue", "batch-b", "--name", "both", "--gpus",
            "2", "--", "true",
        ],
    );
    // A job wanting one gets the other GPU, never the replica's.
    s.ok(
        &b,
        &[
            "job",
            "submit",
            "--team",
            "team-b",
            "--queue",
            "batch-b",
            "--name",
            "one",
            "--gpus",
            "1",
            "--",
            "sh",
            "-c",
            "echo gpus=$CUDA_VISIBLE_DEVICES; sleep 60",
        ],
    );
    let logs = wait_for("the one-GPU job's output", 60, || {
        let (code, out, _) = s.cli(&b, &["job", "logs", "one"]);
        (code == 0 && out.contains("gpus=")).then_some(out)
    });
    assert_eq!(logs.trim(), format!("gpus={}", 1 - replica_gpu), "{logs}");
    let both = job_state(&s, &b, "both");
    assert_eq!(both["status"]["state"], "pending", "{both:#}");

    // A second replica now waits for the scheduler, with its reason in the deployment's
    // status, and starts once the job's GPU is free.
    apply_chat_gpus(&s, 1, "{minReplicas: 2, maxReplicas: 2}");
    let problem = wait_for("the second replica waiting", 30, || {
        let p = last_problem(&s);
        p.contains("waiting for admission").then_some(p)
    });
    assert!(problem.contains("queue `serving-a`"), "{problem}");
    assert_eq!(ready_pids(&replicas(&s)).len(), 1);
    s.ok(&b, &["job", "cancel", "one"]);
    let r = wait_for("two ready replicas", 60, || {
        let r = replicas(&s);
        (ready_pids(&r).len() == 2).then_some(r)
    });
    let mut gpus: Vec<u64> = r["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["state"] == "ready")
        .map(|x| x["gpus"][0].as_u64().unwrap())
        .collect();
    gpus.sort();
    assert_eq!(gpus, vec![0, 1], "{r}");
    assert!(last_problem(&s).is_empty(), "{r}");
    let page = get_text(&s, "/console/queues", Auth::Session(ADMIN));
    assert!(page.contains("serve-a: 2 GPUs"), "{page}");

    // A higher-priority job of the replicas' own queue preempts one of them: the replica is
    // stopped, the job runs on its GPU, and a replacement waits for the queue until the job
    // is done.
    let before = replicas(&s)["restarts"].as_u64().unwrap_or(0);
    s.ok(
        &key,
        &[
            "job",
            "submit",
            "--team",
            "team-a",
            "--queue",
            "serving-a",
            "--name",
            "urgent",
            "--priority",
            "100",
            "--gpus",
            "1",
            "--",
            "sleep",
            "3",
        ],
    );
    let r = wait_for("a replica preempted by the job", 60, || {
        let r = replicas(&s);
        (r["restarts"].as_u64() > Some(before) && ready_pids(&r).len() == 1).then_some(r)
    });
    let j = job_state(&s, &key, "urgent");
    assert_ne!(j["status"]["state"], "pending", "{j:#}\n{r}");
    wait_for("the job done", 60, || {
        (job_state(&s, &key, "urgent")["status"]["state"] == "succeeded").then_some(())
    });
    let r = wait_for("the replacement replica ready", 60, || {
        let r = replicas(&s);
        (ready_pids(&r).len() == 2).then_some(r)
    });
    assert!(
        r["lastProblem"]
            .as_str()
            .unwrap_or_default()
            .contains("preempted"),
        "{r}"
    );
    assert_eq!(job_state(&s, &b, "both")["status"]["state"], "pending");

    // Deleting the deployment gives both GPUs back: the waiting job runs.
    s.ok(ADMIN, &["delete", "deployment", "chat"]);
    let j = wait_for("the two-GPU job admitted", 60, || {
        let j = job_state(&s, &b, "both");
        (j["status"]["state"] == "succeeded").then_some(j)
    });
    assert_eq!(
        j["status"]["attempts"].as_array().unwrap().len(),
        1,
        "{j:#}"
    );

    // Inference never runs on spot: a deployment on the spot pool gpu-a is refused, with why.
    apply_chat_spec(&s, "v1", 0, 0, 0, "gpu-a", "{minReplicas: 1}");
    let problem = wait_for("the spot replica refused", 30, || {
        let p = last_problem(&s);
        p.contains("cannot be admitted").then_some(p)
    });
    assert!(problem.contains("spot"), "{problem}");
    assert!(replicas(&s)["replicas"].as_array().unwrap().is_empty());
    assert_eq!(s.terminate(), 0);
}

#[test]
fn a_standalone_gateway_with_a_replicas_dir_runs_its_own_replicas_and_a_file_gateway_refuses_them()
{
    let tmp = tempfile::tempdir().unwrap();
    let _reaper = Reaper(tmp.path().to_path_buf());
    // The server runs no gateway: only the standalone one starts replicas.
    let s = Server::start_in(tmp.path(), &["--gateway-listen", "off"]);
    workspace(&s);
    let key = token(&s, "team-a", "member");
    apply_chat(&s, "v1", 0, "{minReplicas: 1, maxReplicas: 1}");
    let db = format!("sqlite://{}", s.db_path().display());
    let replicas_dir = tmp.path().join("replicas");
    let (url, mut alone) = common::spawn_listening(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--replicas-dir",
        replicas_dir.to_str().unwrap(),
    ]);
    let gateway = format!("{url}/v1");
    let (status, body) = wait_for(
        "an answer from the standalone gateway's replica",
        60,
        || {
            let (status, body) = concurrent_chats(&gateway, &key, 1).remove(0);
            (status == 200).then_some((status, body))
        },
    );
    assert_eq!((status, answer(&body).as_str()), (200, "hello from v1"));
    let pids = recorded_pids(tmp.path());
    assert_eq!(
        pids.len(),
        1,
        "one replica under the replicas dir: {pids:?}"
    );
    let pgid = u64::from(pids[0][0]);
    assert!(alive(pgid));
    // SIGTERM stops the gateway and its replica, whose life becomes a usage row in the store.
    std::process::Command::new("kill")
        .args(["-TERM", &alone.0.id().to_string()])
        .status()
        .unwrap();
    assert!(alone.0.wait().unwrap().success());
    wait_for("the replica stopped with its gateway", 15, || {
        (!alive(pgid)).then_some(())
    });
    let rows = replica_rows(&s);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].tags["team"], "team-a");
    assert_eq!(rows[0].tags["deployment"], "chat");
    assert_eq!(rows[0].end_reason.as_deref(), Some("cancel"));
    assert_eq!(s.terminate(), 0);

    // A gateway on a file of deployments cannot run replicas: it says so at start.
    let file = tmp.path().join("deployments.yaml");
    std::fs::write(
        &file,
        "deployments:\n  - name: chat\n    models: [demo-chat]\n    versions:\n      - name: v1\n        weight: 1\n        replicas: {command: [model-server, \"{port}\"]}\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["gateway", "--listen", "127.0.0.1:0", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployment chat version v1") && err.contains("--replicas-dir"),
        "{err}"
    );
}
