//! End-to-end tests of the local executor with real processes (`sh`, `sleep`, `yes`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plinth_exec::{
    AttemptId, AttemptSpec, AttemptStatus, EndReason, ExecError, Executor, ExitKind, GpuSlot,
    IdlePolicy, LogStream, Outcome, Procurement, RecoveredState, StopReason, SupervisorProgram,
};

/// Generous: the test machine is small and shared.
const PATIENCE: Duration = Duration::from_secs(60);

/// The supervisor binary built with these tests, or `PLINTH_EXEC_SUPERVISOR` when the test
/// binary runs on another machine.
fn executor(root: &Path) -> Executor {
    let program = std::env::var_os("PLINTH_EXEC_SUPERVISOR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_plinth-exec-supervisor").into());
    Executor::new(root, SupervisorProgram::new(program)).expect("executor root")
}

fn sh(job: &str, attempt: u32, script: &str) -> AttemptSpec {
    AttemptSpec::new(job, attempt, vec!["sh".into(), "-c".into(), script.into()])
}

fn finish(ex: &Executor, id: &AttemptId) -> Outcome {
    ex.wait(id, PATIENCE)
        .expect("wait")
        .unwrap_or_else(|| panic!("{id} did not end within {PATIENCE:?}"))
}

fn stdout(ex: &Executor, id: &AttemptId) -> String {
    let chunk = ex
        .read_log(id, LogStream::Stdout, 0, 1 << 20)
        .expect("read stdout");
    String::from_utf8(chunk.data).expect("utf-8 stdout")
}

/// Polls until `cond` holds; panics naming `what` after [`PATIENCE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_output(ex: &Executor, id: &AttemptId, needle: &str) {
    wait_until(&format!("`{needle}` on stdout of {id}"), || {
        stdout(ex, id).contains(needle)
    });
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        })
        .collect()
}

fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rfind(')')
                .is_some_and(|i| !s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn exit_codes_success_and_failure() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());

    let ok = ex.start(sh("ok", 1, "echo hello; echo oops >&2")).unwrap();
    let out = finish(&ex, &ok.id);
    assert_eq!(out.exit, ExitKind::Code(0));
    assert_eq!(out.end_reason, EndReason::Completed);
    assert_eq!(stdout(&ex, &ok.id), "hello\n");
    let err = ex.read_log(&ok.id, LogStream::Stderr, 0, 100).unwrap();
    assert_eq!(err.data, b"oops\n");
    assert!(err.complete);

    let bad = ex.start(sh("bad", 1, "exit 3")).unwrap();
    let out = finish(&ex, &bad.id);
    assert_eq!(out.exit, ExitKind::Code(3));
    assert_eq!(out.end_reason, EndReason::Failed);
    assert!(matches!(ex.status(&bad.id).unwrap(), AttemptStatus::Finished(o) if o == out));

    // The same attempt cannot be started twice; unknown attempts are named.
    let again = ex.start(sh("bad", 1, "exit 0")).unwrap_err();
    assert!(matches!(again, ExecError::AlreadyExists { .. }), "{again}");
    let missing = ex
        .stop(
            &AttemptId::new("nope", 1),
            StopReason::Cancel,
            Duration::ZERO,
        )
        .unwrap_err();
    assert_eq!(missing.to_string(), "job nope attempt 1 not found");
}

#[test]
fn missing_command_is_an_exec_error() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut spec = AttemptSpec::new("ghost", 1, vec!["plinth-no-such-command-x1".into()]);
    spec.tags.insert("team".into(), "vision".into());
    let err = ex.start(spec).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExecError::Spawn { .. }), "{msg}");
    assert!(msg.contains("`plinth-no-such-command-x1`"), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");

    // Recorded as a failed attempt, with a usage record.
    let id = AttemptId::new("ghost", 1);
    let AttemptStatus::Finished(out) = ex.status(&id).unwrap() else {
        panic!("not finished");
    };
    assert_eq!(out.end_reason, EndReason::ExecError);
    assert!(matches!(out.exit, ExitKind::ExecFailed(ref m) if m.contains("No such file")));
    let usage = ex.usage_records().unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].end_reason, EndReason::ExecError);
    assert_eq!(
        usage[0].tags.get("team").map(String::as_str),
        Some("vision")
    );
}

#[test]
fn invalid_specs_are_rejected_before_running() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let err = ex
        .start(sh("../escape", 1, "true"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("job `../escape`") && err.contains("job id"),
        "{err}"
    );
    let mut spec = sh("j", 1, "true");
    spec.env.insert("CUDA_VISIBLE_DEVICES".into(), "0".into());
    let err = ex.start(spec).unwrap_err().to_string();
    assert!(
        err.contains("env `CUDA_VISIBLE_DEVICES`: set by the executor"),
        "{err}"
    );
    assert!(!root.path().join("jobs/j/1").exists());
}

#[test]
fn cancel_sends_sigterm_to_the_group_first() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let script = r#"trap 'echo term > "$PLINTH_WORKDIR/got-term"; exit 7' TERM
echo ready
while :; do sleep 0.1; done"#;
    let a = ex.start(sh("cancel", 1, script)).unwrap();
    wait_for_output(&ex, &a.id, "ready");
    ex.stop(&a.id, StopReason::Cancel, Duration::from_secs(30))
        .unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.end_reason, EndReason::Cancel);
    assert_eq!(
        out.exit,
        ExitKind::Code(7),
        "the trap ran and chose the exit code"
    );
    assert_eq!(
        fs::read_to_string(a.workdir.join("got-term")).unwrap(),
        "term\n"
    );
    // A second stop of an ended attempt is a no-op.
    ex.stop(&a.id, StopReason::Preempted, Duration::ZERO)
        .unwrap();
    assert_eq!(finish(&ex, &a.id).end_reason, EndReason::Cancel);
}

#[test]
fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let a = ex
        .start(sh(
            "stubborn",
            1,
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ))
        .unwrap();
    wait_for_output(&ex, &a.id, "ready");
    ex.stop(&a.id, StopReason::Cancel, Duration::from_millis(500))
        .unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.exit, ExitKind::Signal(9));
    assert_eq!(out.end_reason, EndReason::Cancel);
    assert!(group_members(a.pgid).is_empty());
}

#[test]
fn stop_ends_every_process_of_the_group() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let a = ex
        .start(sh("group", 1, "sleep 100 & sleep 100 & echo ready; wait"))
        .unwrap();
    wait_for_output(&ex, &a.id, "ready");
    wait_until("three processes in the group", || {
        group_members(a.pgid).len() >= 3
    });
    ex.stop(&a.id, StopReason::Preempted, Duration::from_secs(5))
        .unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.end_reason, EndReason::Preempted);
    assert_eq!(group_members(a.pgid), Vec::<u32>::new());
}

#[test]
fn processes_left_behind_by_the_main_process_are_stopped() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut spec = sh("leftover", 1, "sleep 100 & echo started");
    spec.stop_grace = Duration::from_secs(2);
    let a = ex.start(spec).unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.exit, ExitKind::Code(0));
    assert_eq!(out.end_reason, EndReason::Completed);
    assert_eq!(group_members(a.pgid), Vec::<u32>::new());
}

#[test]
fn timeout_stops_with_reason_timeout() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut spec = AttemptSpec::new("slow", 1, vec!["sleep".into(), "100".into()]);
    spec.max_runtime = Some(Duration::from_secs(1));
    let a = ex.start(spec).unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.end_reason, EndReason::Timeout);
    assert_eq!(out.exit, ExitKind::Signal(15));
    assert!(out.usage.wall_seconds >= 1.0, "{}", out.usage.wall_seconds);
}

#[test]
fn idle_sleep_is_stopped_but_a_busy_loop_is_not() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let idle = IdlePolicy::after(Duration::from_millis(1500));

    let mut sleeper = AttemptSpec::new("sleeper", 1, vec!["sleep".into(), "100".into()]);
    sleeper.idle = Some(idle);
    sleeper.sample_interval = Duration::from_millis(300);
    let s = ex.start(sleeper).unwrap();

    let mut busy = sh("busy", 1, "while :; do :; done");
    busy.idle = Some(idle);
    busy.sample_interval = Duration::from_millis(300);
    busy.max_runtime = Some(Duration::from_secs(6));
    let b = ex.start(busy).unwrap();

    let out = finish(&ex, &s.id);
    assert_eq!(out.end_reason, EndReason::Idle);
    let out = finish(&ex, &b.id);
    assert_eq!(out.end_reason, EndReason::Timeout, "busy loop judged idle");
    assert!(out.usage.cpu_seconds > 0.0);
}

#[test]
fn log_cap_holds_for_a_writer_that_never_stops() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let cap = 64 * 1024;
    let mut spec = AttemptSpec::new("yes", 1, vec!["yes".into(), "plinth".into()]);
    spec.log_cap_bytes = cap;
    spec.max_runtime = Some(Duration::from_secs(2));
    let a = ex.start(spec).unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.end_reason, EndReason::Timeout);
    let file = fs::read(a.dir.join("stdout.log")).unwrap();
    assert_eq!(file.len() as u64, cap);
    assert!(out.stdout.bytes_dropped > 0);
    let text = String::from_utf8_lossy(&file);
    assert!(text.starts_with("plinth\nplinth\n"));
    assert!(
        text.ends_with("further output dropped]\n"),
        "{}",
        &text[text.len() - 80..]
    );
}

#[test]
fn logs_follow_from_an_offset() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let a = ex
        .start(sh(
            "follow",
            1,
            "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done",
        ))
        .unwrap();
    let mut offset = 0;
    let mut text = Vec::new();
    let mut chunks = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let c = ex
            .follow_log(
                &a.id,
                LogStream::Stdout,
                offset,
                4096,
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(c.next_offset, offset + c.data.len() as u64);
        offset = c.next_offset;
        text.extend_from_slice(&c.data);
        if !c.data.is_empty() {
            chunks.push(c.complete);
        }
        if c.complete {
            break;
        }
        assert!(Instant::now() < deadline, "log never completed");
    }
    assert_eq!(text, b"line1\nline2\nline3\nline4\nline5\n");
    assert_eq!(
        chunks.first(),
        Some(&false),
        "first lines arrived while running"
    );
    let tail = ex.read_log(&a.id, LogStream::Stdout, 6, 6).unwrap();
    assert_eq!(tail.data, b"line2\n");
    assert_eq!(tail.next_offset, 12);
    assert!(!tail.complete);
    let end = ex.read_log(&a.id, LogStream::Stdout, 30, 100).unwrap();
    assert!(end.data.is_empty() && end.complete);
}

#[test]
fn environment_gpus_and_workdir() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let script = r#"echo "job=$PLINTH_JOB_ID attempt=$PLINTH_ATTEMPT cuda=[$CUDA_VISIBLE_DEVICES] mine=$MY_VAR"
echo "ckpt=$PLINTH_CHECKPOINT_DIR"
echo "workdir=$PLINTH_WORKDIR"
echo "pwd=$(pwd -P)"
echo "cargo_vars=$(env | grep -c '^CARGO_')""#;
    let mut spec = sh("envjob", 2, script);
    spec.env.insert("MY_VAR".into(), "x y".into());
    spec.gpus = vec![
        GpuSlot::whole(0),
        GpuSlot {
            index: 2,
            fraction: Some(0.5),
        },
    ];
    spec.pool = "h100-spot".into();
    spec.procurement = Procurement::Spot;
    let a = ex.start(spec).unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.end_reason, EndReason::Completed);
    let text = stdout(&ex, &a.id);
    let workdir = a.workdir.canonicalize().unwrap();
    assert!(
        text.contains("job=envjob attempt=2 cuda=[0,2] mine=x y\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("ckpt={}\n", a.checkpoint_dir.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("pwd={}\n", workdir.display())),
        "{text}"
    );
    assert!(text.contains("cargo_vars=0\n"), "server env leaked: {text}");
    assert_eq!(a.checkpoint_dir, root.path().join("jobs/envjob/checkpoint"));
    // 1.5 GPUs held for the whole wall time.
    let u = &out.usage;
    assert_eq!(
        (u.pool.as_str(), u.procurement),
        ("h100-spot", Procurement::Spot)
    );
    assert!((u.gpu_seconds - 1.5 * u.wall_seconds).abs() < 1e-9, "{u:?}");

    let cpu = ex
        .start(sh(
            "cpujob",
            1,
            "echo \"cuda=[${CUDA_VISIBLE_DEVICES-unset}]\"",
        ))
        .unwrap();
    finish(&ex, &cpu.id);
    assert_eq!(stdout(&ex, &cpu.id), "cuda=[]\n");
}

#[test]
fn interrupted_attempt_resumes_from_its_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let script = r#"f="$PLINTH_CHECKPOINT_DIR/counter"
n=$(cat "$f" 2>/dev/null || echo 0)
echo "resumed from $n"
trap 'echo $n > "$f"; exit 143' TERM
while [ "$n" -lt 40 ]; do n=$((n+1)); echo "step $n"; sleep 0.1; done
echo done"#;
    let mut spec = sh("spot", 1, script);
    spec.procurement = Procurement::Spot;
    let a1 = ex.start(spec.clone()).unwrap();
    wait_for_output(&ex, &a1.id, "step 3\n");
    ex.stop(&a1.id, StopReason::Interrupted, Duration::from_secs(30))
        .unwrap();
    let out1 = finish(&ex, &a1.id);
    assert_eq!(out1.end_reason, EndReason::Interrupted);
    assert_eq!(out1.exit, ExitKind::Code(143));
    let saved: u32 = fs::read_to_string(a1.checkpoint_dir.join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((3..40).contains(&saved), "checkpoint {saved}");

    spec.attempt = 2;
    let a2 = ex.start(spec).unwrap();
    assert_eq!(a2.checkpoint_dir, a1.checkpoint_dir);
    let out2 = finish(&ex, &a2.id);
    assert_eq!(out2.end_reason, EndReason::Completed);
    let text = stdout(&ex, &a2.id);
    assert!(
        text.starts_with(&format!("resumed from {saved}\nstep {}\n", saved + 1)),
        "{text}"
    );
    assert!(text.ends_with("step 40\ndone\n"), "{text}");
}

#[test]
fn a_restarted_server_adopts_running_attempts_and_can_stop_them() {
    let root = tempfile::tempdir().unwrap();
    let first = executor(root.path());
    let script = r#"trap 'echo bye > "$PLINTH_WORKDIR/bye"; exit 0' TERM
echo ready
while :; do sleep 0.1; done"#;
    let a = first.start(sh("long", 1, script)).unwrap();
    wait_for_output(&first, &a.id, "ready");
    drop(first); // the server dies; the attempt keeps running

    let second = executor(root.path());
    let found = second.recover().unwrap();
    assert_eq!(found.len(), 1);
    let RecoveredState::Adopted(adopted) = &found[0].state else {
        panic!("not adopted: {:?}", found[0]);
    };
    assert_eq!(adopted.pid, a.pid);
    assert!(process_alive(a.pid));
    second
        .stop(&a.id, StopReason::Cancel, Duration::from_secs(30))
        .unwrap();
    let out = finish(&second, &a.id);
    assert_eq!(out.end_reason, EndReason::Cancel);
    assert_eq!(out.exit, ExitKind::Code(0));
    assert!(a.workdir.join("bye").exists());

    // A third restart sees it ended.
    let third = executor(root.path());
    let found = third.recover().unwrap();
    assert!(
        matches!(&found[0].state, RecoveredState::Exited(o) if o.end_reason == EndReason::Cancel)
    );
}

#[test]
fn an_attempt_whose_supervisor_vanished_is_lost_and_its_group_killed() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut spec = AttemptSpec::new("orphan", 1, vec!["sleep".into(), "100".into()]);
    spec.sample_interval = Duration::from_millis(100);
    spec.tags = BTreeMap::from([("team".to_owned(), "nlp".to_owned())]);
    let a = ex.start(spec).unwrap();
    wait_until("a usage sample", || a.dir.join("status.json").exists());
    let killed = Command::new("kill")
        .args(["-KILL", &a.supervisor_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("the supervisor to die", || !process_alive(a.supervisor_pid));
    assert!(process_alive(a.pid), "the command outlives its supervisor");

    let found = ex.recover().unwrap();
    let RecoveredState::Lost(out) = &found[0].state else {
        panic!("not lost: {:?}", found[0]);
    };
    assert_eq!(out.end_reason, EndReason::Lost);
    assert_eq!(out.usage.tags.get("team").map(String::as_str), Some("nlp"));
    wait_until("the orphaned group to be killed", || {
        group_members(a.pgid).is_empty()
    });
    // Reported the same way again, without a second usage record.
    let again = ex.recover().unwrap();
    assert!(matches!(again[0].state, RecoveredState::Lost(_)));
    let lost: Vec<_> = ex
        .usage_records()
        .unwrap()
        .into_iter()
        .filter(|u| u.end_reason == EndReason::Lost)
        .collect();
    assert_eq!(lost.len(), 1);
}

#[test]
fn an_attempt_whose_processes_are_gone_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let a = ex.start(sh("gone", 1, "true")).unwrap();
    finish(&ex, &a.id);
    wait_until("the supervisor to exit", || {
        !process_alive(a.supervisor_pid)
    });
    // As if the machine rebooted before the outcome was written.
    fs::remove_file(a.dir.join("exit.json")).unwrap();
    let found = ex.recover().unwrap();
    assert!(
        matches!(found[0].state, RecoveredState::Lost(_)),
        "{:?}",
        found[0]
    );
}

#[test]
fn a_reused_pid_is_not_adopted_nor_signalled() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let a = ex.start(sh("reused", 1, "true")).unwrap();
    finish(&ex, &a.id);
    fs::remove_file(a.dir.join("exit.json")).unwrap();

    // An unrelated process now holds the recorded pids (same numbers, later start time).
    let mut stranger = Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = stranger.id();
    let pid_file = a.dir.join("pid.json");
    let mut rec: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&pid_file).unwrap()).unwrap();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let real_start: u64 = fields[19].parse().unwrap();
    for key in ["pid", "pgid", "supervisor_pid"] {
        rec[key] = pid.into();
    }
    rec["starttime"] = (real_start.saturating_sub(7)).into();
    rec["supervisor_starttime"] = (real_start.saturating_sub(7)).into();
    fs::write(&pid_file, serde_json::to_vec(&rec).unwrap()).unwrap();

    let found = ex.recover().unwrap();
    assert!(
        matches!(found[0].state, RecoveredState::Lost(_)),
        "{:?}",
        found[0]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the stranger was signalled"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

#[test]
fn usage_records_meter_cpu_and_carry_tags() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut spec = sh(
        "burn",
        1,
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo $i",
    );
    spec.tags = BTreeMap::from([
        ("team".to_owned(), "vision".to_owned()),
        ("project".to_owned(), "detector".to_owned()),
        ("env".to_owned(), "prod".to_owned()),
        ("model".to_owned(), "yolo".to_owned()),
        ("owner".to_owned(), "ana".to_owned()),
    ]);
    let a = ex.start(spec.clone()).unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(stdout(&ex, &a.id), "300000\n");
    let records = ex.usage_records().unwrap();
    assert_eq!(records.len(), 1);
    let u = &records[0];
    assert_eq!(u, &out.usage);
    assert_eq!((u.job_id.as_str(), u.attempt), ("burn", 1));
    assert!(u.cpu_seconds > 0.0, "{u:?}");
    assert!(u.wall_seconds > 0.0 && u.ended_at >= u.started_at, "{u:?}");
    assert_eq!(u.gpu_seconds, 0.0);
    assert_eq!(u.tags, spec.tags);
    assert_eq!(u.end_reason, EndReason::Completed);
    let line = fs::read_to_string(ex.usage_file()).unwrap();
    assert!(line.contains("\"procurement\":\"on_demand\""), "{line}");
}

#[test]
fn status_reports_usage_samples_while_running() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut spec = sh("sampled", 1, "while :; do :; done");
    spec.sample_interval = Duration::from_millis(200);
    let a = ex.start(spec).unwrap();
    wait_until("a sample with CPU use", || {
        match ex.status(&a.id).unwrap() {
            AttemptStatus::Running {
                snapshot: Some(s),
                stop,
                ..
            } => {
                assert_eq!(stop, None);
                assert_eq!(s.gpu_util_pct, None, "no GPUs asked for");
                s.cpu_seconds > 0.0 && s.cpu_cores > 0.0
            }
            AttemptStatus::Running { .. } => false,
            AttemptStatus::Finished(o) => panic!("ended early: {o:?}"),
        }
    });
    ex.stop(&a.id, StopReason::Cancel, Duration::from_secs(5))
        .unwrap();
    let out = finish(&ex, &a.id);
    assert_eq!(out.end_reason, EndReason::Cancel);
    assert!(out.usage.cpu_seconds > 0.0);
}

#[test]
fn stop_works_when_the_supervisor_has_died() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    // Without its supervisor the command has lost its log pipes (a write there would end it
    // with SIGPIPE), so this script moves its output to a file before the supervisor dies.
    let script = r#"trap 'echo term > "$PLINTH_WORKDIR/got-term"; exit 0' TERM
echo ready
exec > "$PLINTH_WORKDIR/out" 2>&1
while :; do sleep 0.1; done"#;
    let a = ex.start(sh("headless", 1, script)).unwrap();
    wait_for_output(&ex, &a.id, "ready");
    let killed = Command::new("kill")
        .args(["-KILL", &a.supervisor_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("the supervisor to die", || !process_alive(a.supervisor_pid));
    ex.stop(&a.id, StopReason::Cancel, Duration::from_secs(5))
        .unwrap();
    wait_until("the group to end", || group_members(a.pgid).is_empty());
    assert!(a.workdir.join("got-term").exists());
    let found = ex.recover().unwrap();
    assert!(
        matches!(found[0].state, RecoveredState::Lost(_)),
        "{:?}",
        found[0]
    );
}

#[test]
fn usage_file_tolerates_a_torn_last_line_but_not_a_corrupt_one() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let a = ex.start(sh("meter", 1, "true")).unwrap();
    finish(&ex, &a.id);
    let path = ex.usage_file();
    let good = fs::read_to_string(&path).unwrap();
    fs::write(&path, format!("{good}{{\"job_id\":\"cut")).unwrap();
    assert_eq!(ex.usage_records().unwrap().len(), 1);
    fs::write(&path, format!("{good}{{\"job_id\":\"cut\n{good}")).unwrap();
    let err = ex.usage_records().unwrap_err().to_string();
    assert!(
        err.contains("usage.jsonl") && err.contains("line 2"),
        "{err}"
    );
}
