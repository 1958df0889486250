//! Jobs end to end: the real `plinth` binary, the real scheduler, real processes under the
//! real supervisor (`plinth exec-supervisor`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN, Auth, Server, cpu_workspace, get_text, http_json, token, write};

/// A CPU pool of one node with 4 cores; queue `cpu-q` of team-a may use 2 cores.
fn jobs_workspace() -> String {
    cpu_workspace(
        "cpu",
        "{nodes: 1, cpusPerNode: 4, memoryGibPerNode: 8}",
        "cpu-q",
        2,
    )
}

fn setup() -> (Server, String) {
    let s = Server::start();
    s.apply("jobs.yaml", &jobs_workspace());
    let member = token(&s, "team-a", "member");
    (s, member)
}

fn submit(s: &Server, tok: &str, name: &str, extra: &[&str], cmd: &[&str]) {
    let mut args = vec!["job", "submit", "--team", "team-a", "--name", name];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(cmd);
    s.ok(tok, &args);
}

fn job(s: &Server, tok: &str, name: &str) -> serde_json::Value {
    let out = s.ok(tok, &["job", "describe", name, "-o", "json"]);
    serde_json::from_str(&out).expect("job json")
}

/// Polls until the job's state is one of `states`; generous deadline, no timing assertion.
fn wait_state(s: &Server, tok: &str, name: &str, states: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job(s, tok, name);
        let st = j["status"]["state"].as_str().unwrap_or("").to_string();
        if states.contains(&st.as_str()) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {name} never reached {states:?}; last: {j:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn a_job_runs_and_its_log_is_readable() {
    let (s, m) = setup();
    submit(&s, &m, "hello", &[], &["sh", "-c", "echo hello; exit 0"]);
    let j = wait_state(&s, &m, "hello", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    assert_eq!(j["status"]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(j["status"]["attempts"][0]["exit"], "code 0");
    let logs = s.ok(&m, &["job", "logs", "hello"]);
    assert_eq!(logs.trim(), "hello");
    let list = s.ok(&m, &["job", "list"]);
    assert!(
        list.contains("hello") && list.contains("succeeded"),
        "{list}"
    );
    // The console lists it and shows its attempts and log; metrics count the admission.
    let page = get_text(&s, "/console/jobs", Auth::Session(&m));
    assert!(page.contains("id=\"job-hello\""), "{page}");
    let page = get_text(&s, "/console/jobs/hello", Auth::Session(&m));
    assert!(
        page.contains("id=\"attempt-1\"") && page.contains("hello"),
        "{page}"
    );
    let metrics = get_text(&s, "/metrics", Auth::None);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("plinth_admissions_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("plinth_queue_pending_jobs{queue=\"cpu-q\"}"),
        "{metrics}"
    );
    // Its events: the whole job, ending with its final state (the stream closes then).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let events = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/v1/jobs/hello/events", s.url))
            .bearer_auth(&m)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(events.starts_with("event: job\n"), "{events}");
    assert!(events.contains("\"state\":\"succeeded\""), "{events}");
    // `plinth apply` of a Job document submits it (after the other documents in the apply);
    // applying it again is unchanged, a changed spec is a conflict.
    let doc = "apiVersion: plinth/v1\nkind: Job\nmetadata: {name: j1}\nspec: {command: [\"true\"], team: team-a, queue: cpu-q}\n";
    let f = write(&s.data_dir, "job.yaml", doc);
    let out = s.ok(&m, &["apply", "-f", &f, "--dry-run"]);
    assert!(out.contains("j1"), "{out}");
    let (code, _, _) = s.cli(&m, &["job", "describe", "j1"]);
    assert_eq!(code, 5, "a dry run stores nothing");
    let out = s.ok(&m, &["apply", "-f", &f]);
    assert!(out.contains("created"), "{out}");
    let j = wait_state(&s, &m, "j1", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    let out = s.ok(&m, &["apply", "-f", &f]);
    assert!(out.contains("unchanged"), "{out}");
    let f2 = write(
        &s.data_dir,
        "job2.yaml",
        &doc.replace("\"true\"", "\"false\""),
    );
    let (code, _, err) = s.cli(&m, &["apply", "-f", &f2]);
    assert_eq!(code, 6, "{err}");
    let bad = write(
        &s.data_dir,
        "bad.yaml",
        &doc.replace("queue: cpu-q", "queue: cpu-q, gpu: 1"),
    );
    let (code, _, err) = s.cli(&m, &["apply", "-f", &bad]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("gpu"), "{err}");
    // ... and `job submit -f` takes the same document.
    let f3 = write(
        &s.data_dir,
        "job3.yaml",
        &doc.replace("name: j1", "name: j3"),
    );
    s.ok(&m, &["job", "submit", "-f", &f3]);
    let j = wait_state(&s, &m, "j3", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    // A viewer reads but may not submit.
    let viewer = token(&s, "team-a", "viewer");
    s.ok(&viewer, &["job", "describe", "hello"]);
    let (code, _, err) = s.cli(
        &viewer,
        &["job", "submit", "--team", "team-a", "--", "true"],
    );
    assert_eq!(code, 4, "{err}");
}

#[test]
fn a_missing_command_fails_with_the_exec_error_and_retries_are_counted() {
    let (s, m) = setup();
    submit(&s, &m, "nocmd", &[], &["/nonexistent/program-xyz"]);
    let j = wait_state(&s, &m, "nocmd", &["failed", "succeeded"]);
    assert_eq!(j["status"]["state"], "failed");
    let exit = j["status"]["attempts"][0]["exit"].as_str().unwrap();
    assert!(exit.contains("exec error"), "{j:#}");
    let text = s.ok(&m, &["job", "describe", "nocmd"]);
    assert!(text.contains("exec_error"), "{text}");

    submit(
        &s,
        &m,
        "flaky",
        &["--max-retries", "2"],
        &["sh", "-c", "exit 3"],
    );
    let j = wait_state(&s, &m, "flaky", &["failed", "succeeded"]);
    assert_eq!(j["status"]["state"], "failed");
    let attempts = j["status"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{j:#}");
    assert!(attempts.iter().all(|a| a["exit"] == "code 3"), "{j:#}");
}

#[test]
fn cancel_and_timeout_stop_the_process() {
    let (s, m) = setup();
    submit(&s, &m, "sleeper", &[], &["sleep", "300"]);
    wait_state(&s, &m, "sleeper", &["running"]);
    let pidfile = s.data_dir.join("exec/jobs/sleeper/1/pid.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pidfile).unwrap()).unwrap();
    let pid = pids["pid"].as_u64().expect("pid") as u32;
    assert!(pid_alive(pid));
    s.ok(&m, &["job", "cancel", "sleeper"]);
    let j = wait_state(&s, &m, "sleeper", &["cancelled", "failed", "succeeded"]);
    assert_eq!(j["status"]["state"], "cancelled", "{j:#}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "sleep 300 still runs after cancel"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second cancel is a conflict (exit 6).
    let (code, _, _) = s.cli(&m, &["job", "cancel", "sleeper"]);
    assert_eq!(code, 6);

    submit(&s, &m, "slow", &["--max-runtime", "2s"], &["sleep", "300"]);
    let j = wait_state(&s, &m, "slow", &["failed", "succeeded", "cancelled"]);
    assert_eq!(j["status"]["state"], "failed");
    assert_eq!(j["status"]["attempts"][0]["reason"], "timeout", "{j:#}");

    // `sleep` uses no CPU: the idle timeout stops it.
    submit(
        &s,
        &m,
        "idler",
        &["--idle-timeout", "2s"],
        &["sleep", "300"],
    );
    let j = wait_state(&s, &m, "idler", &["failed", "succeeded", "cancelled"]);
    assert_eq!(j["status"]["state"], "failed");
    assert_eq!(j["status"]["attempts"][0]["reason"], "idle", "{j:#}");
}

#[test]
fn impossible_jobs_are_rejected_and_over_quota_jobs_wait() {
    let (s, m) = setup();
    // Each request is refused at submit (exit 3) with an error naming what is wrong; only the
    // benchmarks' simulated executor honours a declared runtime.
    let refused: [(&[&str], &str); 4] = [
        (&["--cpus", "64"], "rejected"),
        (&["--gpus", "1", "--gpu-type", "nvidia-nope"], ""),
        (&["--max-runtime", "soon"], "maxRuntime"),
        (&["--simulated-runtime", "1s"], "simulatedRuntime"),
    ];
    for (flags, names) in refused {
        let mut args = vec!["job", "submit", "--team", "team-a"];
        args.extend_from_slice(flags);
        args.extend(["--", "true"]);
        let (code, _, err) = s.cli(&m, &args);
        assert_eq!(code, 3, "{flags:?}: {err}");
        assert!(err.contains(names), "{flags:?}: {err}");
    }

    // Each job takes both cores of the queue's quota: the second waits for the first.
    let first = s.data_dir.join("release-first");
    let cmd = format!("while [ ! -e {} ]; do sleep 0.1; done", first.display());
    submit(&s, &m, "first", &["--cpus", "2"], &["sh", "-c", &cmd]);
    wait_state(&s, &m, "first", &["running"]);
    submit(&s, &m, "second", &["--cpus", "2"], &["sh", "-c", "exit 0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = job(&s, &m, "second");
        assert_eq!(j["status"]["state"], "pending", "{j:#}");
        let why = j["status"]["waitReason"]
            .as_str()
            .unwrap_or("")
            .to_lowercase();
        if why.contains("quota") {
            break;
        }
        assert!(Instant::now() < deadline, "no quota reason: {j:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&first, "go").unwrap();
    wait_state(&s, &m, "first", &["succeeded"]);
    let j = wait_state(&s, &m, "second", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded");
}

fn pids(s: &Server, job: &str, n: u32) -> serde_json::Value {
    let path = s.data_dir.join(format!("exec/jobs/{job}/{n}/pid.json"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "no pid file {}", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_server_killed_while_a_job_runs_adopts_it_after_restart() {
    let (mut s, m) = setup();
    let gate = s.data_dir.join("gate");
    let cmd = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; echo done",
        gate.display()
    );
    submit(&s, &m, "survivor", &[], &["sh", "-c", &cmd]);
    submit(
        &s,
        &m,
        "waiter",
        &["--cpus", "2"],
        &["sh", "-c", "echo second"],
    );
    wait_state(&s, &m, "survivor", &["running"]);
    let pid = pids(&s, "survivor", 1)["pid"].as_u64().unwrap() as u32;
    // kill -9: no chance to clean up.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    assert!(pid_alive(pid), "the job's process must outlive the server");
    let dir = s.data_dir.clone();
    let s2 = Server::start_in(&dir, &[]);
    // Adopted: still running as attempt 1, and the waiting job still waits for its quota.
    let j = job(&s2, &m, "survivor");
    assert_eq!(j["status"]["state"], "running", "{j:#}");
    let w = job(&s2, &m, "waiter");
    assert_eq!(w["status"]["state"], "pending", "{w:#}");
    std::fs::write(&gate, "go").unwrap();
    let j = wait_state(&s2, &m, "survivor", &["succeeded", "failed", "lost"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    assert_eq!(
        j["status"]["attempts"].as_array().unwrap().len(),
        1,
        "{j:#}"
    );
    assert_eq!(s2.ok(&m, &["job", "logs", "survivor"]).trim(), "done");
    let j = wait_state(&s2, &m, "waiter", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    drop(s);
}

#[test]
fn an_attempt_that_vanished_with_the_server_is_lost_and_retried() {
    let (mut s, m) = setup();
    let mark = s.data_dir.join("first-attempt-ran");
    let cmd = format!(
        "if [ -e {0} ]; then echo resumed; exit 0; fi; touch {0}; sleep 300",
        mark.display()
    );
    submit(
        &s,
        &m,
        "phoenix",
        &["--max-retries", "1"],
        &["sh", "-c", &cmd],
    );
    wait_state(&s, &m, "phoenix", &["running"]);
    let p = pids(&s, "phoenix", 1);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    // The machine "reboots": supervisor and command die with the server.
    let sup = p["supervisor_pid"].as_u64().unwrap().to_string();
    let pgid = format!("-{}", p["pgid"].as_u64().unwrap());
    let _ = std::process::Command::new("kill")
        .args(["-9", &sup])
        .status();
    let _ = std::process::Command::new("kill")
        .args(["-9", "--", &pgid])
        .status();
    let dir = s.data_dir.clone();
    let s2 = Server::start_in(&dir, &[]);
    let j = wait_state(&s2, &m, "phoenix", &["succeeded", "failed", "lost"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    let attempts = j["status"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{j:#}");
    assert_eq!(attempts[0]["reason"], "lost", "{j:#}");
    assert_eq!(s2.ok(&m, &["job", "logs", "phoenix"]).trim(), "resumed");
    drop(s);
}

#[test]
fn a_spot_interruption_stops_the_attempt_and_the_next_resumes_from_the_checkpoint() {
    let (s, m) = setup();
    // Step 1 writes a checkpoint and then runs long; a later attempt finds it and finishes.
    let script = r#"ck="$PLINTH_CHECKPOINT_DIR/step"; if [ -f "$ck" ]; then echo "resumed from step $(cat "$ck")"; exit 0; fi; echo 1 > "$ck"; sleep 300"#;
    submit(
        &s,
        &m,
        "trainer",
        &["--spot", "--class", "training"],
        &["sh", "-c", script],
    );
    wait_state(&s, &m, "trainer", &["running"]);
    // Wait until the checkpoint is written.
    let ck = s.data_dir.join("exec/jobs/trainer/checkpoint/step");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ck.exists() {
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Members may not interrupt nodes; admins may.
    let (code, _, _) = s.cli(&m, &["pool", "interrupt", "cpu", "cpu-0"]);
    assert_eq!(code, 4);
    let (code, _, err) = s.cli(ADMIN, &["pool", "interrupt", "cpu", "cpu-9"]);
    assert_eq!(code, 5, "{err}");
    let out = s.ok(ADMIN, &["pool", "interrupt", "cpu", "cpu-0"]);
    assert!(out.contains("trainer"), "{out}");
    let j = wait_state(&s, &m, "trainer", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    let attempts = j["status"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{j:#}");
    assert_eq!(attempts[0]["reason"], "interrupted", "{j:#}");
    assert_eq!(
        s.ok(&m, &["job", "logs", "trainer"]).trim(),
        "resumed from step 1"
    );
}

fn http_post(
    s: &Server,
    tok: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    http_json(s, "POST", path, Auth::Bearer(tok), Some(&body))
}

fn attempt_reasons(j: &serde_json::Value) -> Vec<String> {
    j["status"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A spot CPU pool of one node with 4 cores; queue `spot-q` of team-a may use 2 cores.
fn spot_workspace() -> String {
    cpu_workspace(
        "spot-cpu",
        "{nodes: 1, cpusPerNode: 4, memoryGibPerNode: 8, procurement: spot}",
        "spot-q",
        2,
    )
}

/// Each attempt counts itself in the checkpoint directory; the first `sleepers` attempts run
/// until something stops them, later ones print the count they found and run `tail`.
fn counting_script(sleepers: u32, tail: &str) -> String {
    format!(
        r#"ck="$PLINTH_CHECKPOINT_DIR/count"; n=$(cat "$ck" 2>/dev/null || echo 0); echo $((n+1)) > "$ck"; if [ "$n" -lt {sleepers} ]; then sleep 300; fi; echo "resumed from step $n"; {tail}"#
    )
}

#[test]
fn chaos_interrupts_spot_jobs_which_resume_from_their_checkpoint_and_the_retry_limit_holds() {
    let tmp = tempfile::tempdir().unwrap();
    // About two interruptions a second per node: attempts that sleep are interrupted.
    let s = Server::start_in(
        tmp.path(),
        &["--chaos-spot-interrupt-rate", "7200", "--chaos-seed", "42"],
    );
    s.apply("spot.yaml", &spot_workspace());
    let m = token(&s, "team-a", "member");
    let ck_ok = s.data_dir.join("ck-ok");
    let ck_bad = s.data_dir.join("ck-bad");
    let spot = |ck: &std::path::Path, retries: &'static str| {
        vec![
            "--spot".to_string(),
            "--class".into(),
            "training".into(),
            "--checkpoint-dir".into(),
            ck.display().to_string(),
            "--max-retries".into(),
            retries.into(),
        ]
    };
    // Interruptions do not use up retries: with none allowed it still finishes.
    let args = spot(&ck_ok, "0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    submit(
        &s,
        &m,
        "resumer",
        &args,
        &["sh", "-c", &counting_script(2, "exit 0")],
    );
    // Failures do: one retry allowed, so two failed attempts end it.
    let args = spot(&ck_bad, "1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    submit(
        &s,
        &m,
        "doomed",
        &args,
        &["sh", "-c", &counting_script(2, "exit 3")],
    );

    let j = wait_state(
        &s,
        &m,
        "resumer",
        &["succeeded", "failed", "cancelled", "lost"],
    );
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    let reasons = attempt_reasons(&j);
    let (last, before) = reasons.split_last().unwrap();
    assert_eq!(last, "completed", "{j:#}");
    assert!(
        before.len() >= 2,
        "two attempts sleep until interrupted: {j:#}"
    );
    assert!(before.iter().all(|r| r == "interrupted"), "{j:#}");
    let interrupted = &j["status"]["attempts"][0];
    assert_eq!(interrupted["reason"], "interrupted", "{j:#}");
    // The last attempt found the count its predecessors left in the checkpoint directory.
    let log = s.ok(&m, &["job", "logs", "resumer"]);
    let step: u32 = log
        .trim()
        .strip_prefix("resumed from step ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected log {log:?}"));
    assert!(step >= 2, "{log}");
    assert_eq!(
        std::fs::read_to_string(ck_ok.join("count")).unwrap().trim(),
        (step + 1).to_string()
    );

    let j = wait_state(
        &s,
        &m,
        "doomed",
        &["succeeded", "failed", "cancelled", "lost"],
    );
    assert_eq!(j["status"]["state"], "failed", "{j:#}");
    let reasons = attempt_reasons(&j);
    let failed: Vec<&serde_json::Value> = j["status"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["reason"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2, "max retries 1: two failed attempts: {j:#}");
    assert!(failed.iter().all(|a| a["exit"] == "code 3"), "{j:#}");
    assert_eq!(reasons.last().map(String::as_str), Some("failed"), "{j:#}");
    assert!(
        reasons.iter().filter(|r| *r == "interrupted").count() >= 2,
        "{j:#}"
    );
    assert!(
        reasons.iter().all(|r| r == "interrupted" || r == "failed"),
        "{j:#}"
    );
    let msg = j["status"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("no retries left"), "{j:#}");
}

/// One node with 8 GPUs; queue `gpu-q` of team-a has all 8.
const SIM_WORKSPACE: &str = r#"
apiVersion: plinth/v1
kind: Pool
metadata: {name: gpu}
spec: {nodes: 1, cpusPerNode: 16, memoryGibPerNode: 64, accelerator: {type: nvidia-h100-80gb, count: 8}}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: team-a}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: gpu-q}
spec: {team: team-a, quotas: [{pool: gpu, gpus: 8}]}
"#;

fn sim_job(name: &str, gpus: f64, runtime: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "spec": {"command": ["simulated"], "team": "team-a",
        "queue": "gpu-q", "gpus": gpus, "simulatedRuntime": runtime}})
}

fn ts(v: &serde_json::Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("timestamp")).expect("rfc3339")
}

#[test]
fn the_simulated_executor_holds_resources_for_the_declared_runtime_and_batches_are_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--executor", "simulated"]);
    s.apply("sim.yaml", SIM_WORKSPACE);
    let m = token(&s, "team-a", "member");

    // Without a declared runtime a simulated job is refused, naming the field.
    let (code, _, err) = s.cli(
        &m,
        &[
            "job", "submit", "--team", "team-a", "--gpus", "1", "--", "true",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("simulatedRuntime"), "{err}");

    // All 8 GPUs for 400 ms, then two jobs of 4 that can only start after it.
    let (status, body) = http_post(
        &s,
        &m,
        "/api/v1/jobs:batch",
        serde_json::json!({"jobs": [sim_job("big", 8.0, "400ms"), sim_job("half-a", 4.0, "200ms"),
            sim_job("half-b", 4.0, "200ms")]}),
    );
    assert_eq!(status, 201, "{body:#}");
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big", "half-a", "half-b"]);
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .all(|j| j["generation"] == 1)
    );
    let mut ends = Vec::new();
    for name in ["big", "half-a", "half-b"] {
        let j = wait_state(&s, &m, name, &["succeeded", "failed", "cancelled", "lost"]);
        assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
        assert_eq!(attempt_reasons(&j), ["completed"], "{j:#}");
        let a = &j["status"]["attempts"][0];
        assert_eq!(a["exit"], "code 0", "{j:#}");
        let held = ts(&a["endedAt"]) - ts(&a["startedAt"]);
        let declared = if name == "big" { 400 } else { 200 };
        assert!(
            held.num_milliseconds() >= declared,
            "{name} held {held:?}: {j:#}"
        );
        ends.push((ts(&a["startedAt"]), ts(&a["endedAt"])));
    }
    // The halves waited for the whole node: each started after `big` ended.
    assert!(ends[1].0 >= ends[0].1 && ends[2].0 >= ends[0].1, "{ends:?}");
    // No process ran, so there is no log.
    assert_eq!(s.ok(&m, &["job", "logs", "big"]).trim(), "");

    // A batch with one impossible job stores nothing and names the job.
    let (status, body) = http_post(
        &s,
        &m,
        "/api/v1/jobs:batch",
        serde_json::json!({"jobs": [sim_job("fine", 1.0, "1s"), sim_job("huge", 64.0, "1s")]}),
    );
    assert_eq!(status, 400, "{body:#}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("jobs[1] (Job/huge): spec: rejected"),
        "{msg}"
    );
    let (code, _, _) = s.cli(&m, &["job", "describe", "fine"]);
    assert_eq!(code, 5, "nothing of a rejected batch is stored");
    // A name that exists fails the whole batch too.
    let (status, body) = http_post(
        &s,
        &m,
        "/api/v1/jobs:batch",
        serde_json::json!({"jobs": [sim_job("fine", 1.0, "1s"), sim_job("big", 1.0, "1s")]}),
    );
    assert_eq!(status, 409, "{body:#}");
    let (code, _, _) = s.cli(&m, &["job", "describe", "fine"]);
    assert_eq!(code, 5, "nothing of a conflicting batch is stored");
    // An empty batch and an unknown field are bad requests.
    let (status, _) = http_post(
        &s,
        &m,
        "/api/v1/jobs:batch",
        serde_json::json!({"jobs": []}),
    );
    assert_eq!(status, 400);
    let (status, body) = http_post(&s, &m, "/api/v1/jobs:batch", serde_json::json!({"job": []}));
    assert_eq!(status, 400, "{body:#}");
    // A viewer may not submit batches.
    let viewer = token(&s, "team-a", "viewer");
    let (status, _) = http_post(
        &s,
        &viewer,
        "/api/v1/jobs:batch",
        serde_json::json!({"jobs": [sim_job("v", 1.0, "1s")]}),
    );
    assert_eq!(status, 403);
    // `brief=true` answers each stored job's name and generation only.
    let (status, body) = http_post(
        &s,
        &m,
        "/api/v1/jobs:batch?brief=true",
        serde_json::json!({"jobs": [sim_job("brief-a", 1.0, "1s"), sim_job("brief-b", 1.0, "1s")]}),
    );
    assert_eq!(status, 201, "{body:#}");
    assert_eq!(
        body,
        serde_json::json!([{"name": "brief-a", "generation": 1},
            {"name": "brief-b", "generation": 1}])
    );
    let (code, _, _) = s.cli(&m, &["job", "describe", "brief-b"]);
    assert_eq!(code, 0, "a brief batch is stored like any other");
}

#[test]
fn a_reapplied_pool_and_queue_are_picked_up_while_the_server_runs() {
    let (s, m) = setup();
    // Six cores fit no node of the pool (4 cores): rejected at submit.
    let (code, _, err) = s.cli(
        &m,
        &[
            "job", "submit", "--team", "team-a", "--name", "wide", "--cpus", "6", "--", "true",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("rejected"), "{err}");
    // A job running on the node when the pool changes: its first attempt sleeps.
    submit(
        &s,
        &m,
        "resident",
        &[],
        &["sh", "-c", &counting_script(1, "exit 0")],
    );
    wait_state(&s, &m, "resident", &["running"]);
    let bigger = jobs_workspace()
        .replace("cpusPerNode: 4", "cpusPerNode: 8")
        .replace("cpus: 2}", "cpus: 8}");
    s.apply("bigger.yaml", &bigger);
    // No restart: once the controller has read the change, the same job is accepted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, err) = s.cli(
            &m,
            &[
                "job", "submit", "--team", "team-a", "--name", "wide", "--cpus", "6", "--", "true",
            ],
        );
        if code == 0 {
            break;
        }
        assert_eq!(code, 3, "{err}");
        assert!(
            Instant::now() < deadline,
            "the bigger pool was never used: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let j = wait_state(&s, &m, "wide", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    // The resized node left and came back bigger: the resident job was interrupted and its
    // second attempt resumed from its checkpoint.
    let j = wait_state(&s, &m, "resident", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    assert_eq!(attempt_reasons(&j), ["interrupted", "completed"], "{j:#}");
    assert_eq!(
        s.ok(&m, &["job", "logs", "resident"]).trim(),
        "resumed from step 1"
    );
}

/// A CPU pool of three nodes with 2 cores each; queue `gang-q` of team-a may use 4 cores.
fn gang_workspace() -> String {
    cpu_workspace(
        "gang-cpu",
        "{nodes: 3, cpusPerNode: 2, memoryGibPerNode: 4}",
        "gang-q",
        4,
    )
}

#[test]
fn a_gang_job_runs_one_process_per_node_ends_with_all_and_fails_as_one() {
    let s = Server::start();
    s.apply("gang.yaml", &gang_workspace());
    let m = token(&s, "team-a", "member");
    let gang = |name: &str, nodes: &str, ckpt: &str, script: &str| {
        let args = [
            "job",
            "submit",
            "--team",
            "team-a",
            "--queue",
            "gang-q",
            "--name",
            name,
            "--nodes",
            nodes,
            "--cpus",
            "2",
            "--checkpoint-dir",
            ckpt,
            "--",
            "sh",
            "-c",
            script,
        ];
        s.cli(&m, &args)
    };
    let ckpt = s.data_dir.join("gang-ckpt");
    let ckpt_s = ckpt.to_str().unwrap();

    // Four pods of 2 cores: the pool has three nodes. Rejected at submit with the reason.
    let (code, _, err) = gang("too-wide", "4", ckpt_s, "true");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("rejected"), "{err}");

    // Each pod writes what it was told; rank 1 writes only after a pause, so a job that ended
    // with rank 0 would not find its file.
    let script = r#"[ "$PLINTH_RANK" = 0 ] || sleep 1; echo "$PLINTH_JOB_ID $PLINTH_RANK $PLINTH_WORLD_SIZE $PLINTH_NODE [$CUDA_VISIBLE_DEVICES]" > "$PLINTH_CHECKPOINT_DIR/rank-$PLINTH_RANK"; echo "log of rank $PLINTH_RANK""#;
    let (code, _, err) = gang("pair", "2", ckpt_s, script);
    assert_eq!(code, 0, "{err}");
    let j = wait_state(&s, &m, "pair", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    assert_eq!(j["spec"]["nodes"], 2, "{j:#}");
    let pods = j["status"]["attempts"][0]["pods"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(pods.len(), 2, "{j:#}");
    let mut nodes = Vec::new();
    for (rank, pod) in pods.iter().enumerate() {
        assert_eq!(pod["rank"], rank, "{j:#}");
        let node = pod["node"].as_str().unwrap();
        let seen = std::fs::read_to_string(ckpt.join(format!("rank-{rank}"))).unwrap();
        assert_eq!(seen.trim(), format!("pair {rank} 2 {node} []"), "{j:#}");
        nodes.push(node.to_string());
    }
    assert_ne!(
        nodes[0], nodes[1],
        "two pods of a whole node each share none"
    );
    assert_eq!(j["status"]["attempts"][0]["node"], nodes[0].as_str());
    // Each pod's log is its own: rank 0's by default, the others' with --pod.
    assert_eq!(s.ok(&m, &["job", "logs", "pair"]).trim(), "log of rank 0");
    assert_eq!(
        s.ok(&m, &["job", "logs", "pair", "--pod", "1"]).trim(),
        "log of rank 1"
    );
    let (code, _, err) = s.cli(&m, &["job", "logs", "pair", "--pod", "2"]);
    assert_ne!(code, 0);
    assert!(err.contains("no pod 2"), "{err}");

    // Rank 1 fails at once; rank 0 would sleep for five minutes: it is stopped, and the
    // attempt fails with rank 1's exit.
    let script = r#"if [ "$PLINTH_RANK" = 1 ]; then exit 3; fi; echo $$ > "$PLINTH_CHECKPOINT_DIR/pid"; exec sleep 300"#;
    let (code, _, err) = gang("broken", "2", ckpt_s, script);
    assert_eq!(code, 0, "{err}");
    let j = wait_state(&s, &m, "broken", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "failed", "{j:#}");
    assert_eq!(attempt_reasons(&j), ["failed"], "{j:#}");
    assert_eq!(j["status"]["attempts"][0]["exit"], "code 3", "{j:#}");
    // (Rank 0 may have been stopped before it wrote its pid.)
    if let Ok(pid) = std::fs::read_to_string(ckpt.join("pid")) {
        let pid: u32 = pid.trim().parse().unwrap();
        assert!(
            !pid_alive(pid),
            "rank 0 ({pid}) still runs after its gang failed"
        );
    }
}

#[test]
fn a_pool_changed_to_spot_stops_the_jobs_it_no_longer_admits_until_it_changes_back() {
    let (s, m) = setup();
    submit(
        &s,
        &m,
        "steady",
        &[],
        &["sh", "-c", &counting_script(1, "exit 0")],
    );
    wait_state(&s, &m, "steady", &["running"]);
    // The same pool, now spot: the job does not tolerate spot. No restart.
    let spot = jobs_workspace().replace(
        "memoryGibPerNode: 8}",
        "memoryGibPerNode: 8, procurement: spot}",
    );
    assert_ne!(spot, jobs_workspace());
    s.apply("spot.yaml", &spot);
    let j = wait_state(&s, &m, "steady", &["pending"]);
    assert_eq!(attempt_reasons(&j), ["interrupted"], "{j:#}");
    let msg = j["status"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("pool cpu was changed"), "{j:#}");
    // On demand again: the job runs and resumes from its checkpoint.
    s.apply("back.yaml", &jobs_workspace());
    let j = wait_state(&s, &m, "steady", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    assert_eq!(attempt_reasons(&j), ["interrupted", "completed"], "{j:#}");
    assert_eq!(
        s.ok(&m, &["job", "logs", "steady"]).trim(),
        "resumed from step 1"
    );
}

#[test]
fn a_pool_switched_between_gpu_and_cpu_replaces_its_nodes_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--executor", "simulated"]);
    s.apply("sim.yaml", SIM_WORKSPACE);
    let m = token(&s, "team-a", "member");
    let (status, body) = http_post(&s, &m, "/api/v1/jobs", sim_job("long", 1.0, "1h"));
    assert_eq!(status, 201, "{body:#}");
    wait_state(&s, &m, "long", &["running"]);

    // The pool loses its GPUs: its node is replaced, the GPU job waits again.
    let cpu = SIM_WORKSPACE.replace(
        "spec: {nodes: 1, cpusPerNode: 16, memoryGibPerNode: 64, accelerator: {type: nvidia-h100-80gb, count: 8}}",
        "spec: {nodes: 2, cpusPerNode: 16, memoryGibPerNode: 64}",
    );
    assert_ne!(cpu, SIM_WORKSPACE);
    s.apply("cpu.yaml", &cpu);
    let j = wait_state(&s, &m, "long", &["pending"]);
    assert_eq!(attempt_reasons(&j), ["interrupted"], "{j:#}");
    // A CPU job runs on the new nodes.
    let (status, body) = http_post(&s, &m, "/api/v1/jobs", sim_job("cpu-only", 0.0, "50ms"));
    assert_eq!(status, 201, "{body:#}");
    let j = wait_state(&s, &m, "cpu-only", &["succeeded", "failed"]);
    assert_eq!(j["status"]["state"], "succeeded", "{j:#}");
    let node = j["status"]["attempts"][0]["node"].as_str().unwrap_or("");
    assert!(node.starts_with("gpu-"), "{j:#}");
    assert!(
        j["status"]["attempts"][0]["gpus"].is_null(),
        "no GPU: {j:#}"
    );
    // GPUs again: the waiting job runs again.
    s.apply("gpu.yaml", SIM_WORKSPACE);
    let j = wait_state(&s, &m, "long", &["running"]);
    assert_eq!(
        j["status"]["attempts"].as_array().unwrap().len(),
        2,
        "{j:#}"
    );
}
