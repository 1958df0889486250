//! The per-attempt supervisor process.
//!
//! [`main`] is the entry point: `plinth-exec-supervisor <attempt-dir>` (or a hidden subcommand
//! of the `plinth` binary that calls it). It reads `<attempt-dir>/attempt.json`, starts the
//! command as its child in a new process group, writes `pid.json` (pids and kernel start times),
//! copies the command's output into capped log files, watches run time, idleness and
//! `stop.json`, and finally writes `exit.json` and appends the usage record. Because the command
//! is the supervisor's own child, its exit status is known exactly, also when the server that
//! started the supervisor has died in the meantime.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ExecError;
use crate::files::{self, EXIT_FILE, PID_FILE, STATUS_FILE, STOP_FILE};
use crate::gpu::GpuProbe;
use crate::procfs::{self, GroupSignal, TICKS_PER_SECOND};
use crate::types::{
    AttemptSpec, EndReason, ExitKind, LogInfo, LogStream, Outcome, Snapshot, StopReason,
    StopRequest, UsageRecord,
};

/// Variables passed from the server's environment to the command; everything else is cleared
/// so server secrets do not leak into jobs.
const PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
];

const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the log readers once the group is gone (a process that left the group
/// may still hold the pipe).
const LOG_DRAIN_WAIT: Duration = Duration::from_secs(5);

/// `attempt.json`: the resolved spec, written by the executor before the supervisor starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptRecord {
    pub spec: AttemptSpec,
    pub workdir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub usage_file: PathBuf,
    pub created_at: DateTime<Utc>,
}

/// `pid.json`: written by the supervisor once the command runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub pid: u32,
    pub pgid: u32,
    pub starttime: u64,
    pub supervisor_pid: u32,
    pub supervisor_starttime: u64,
    pub started_at: DateTime<Utc>,
}

/// Entry point of the supervisor process; `args` are the arguments after the program name.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: plinth-exec-supervisor <attempt-dir>");
        return ExitCode::from(2);
    };
    match run(Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plinth-exec-supervisor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Supervises the attempt in `dir` until it ends.
pub fn run(dir: &Path) -> Result<(), ExecError> {
    let record_path = dir.join(files::ATTEMPT_FILE);
    let record: AttemptRecord = files::read_json(&record_path)?
        .ok_or_else(|| ExecError::Usage(format!("{}: no attempt record", record_path.display())))?;
    let spec = &record.spec;
    let Some(program) = spec.command.first() else {
        return Err(ExecError::Usage(format!(
            "{}: empty command",
            record_path.display()
        )));
    };
    let started_at = Utc::now();
    let t0 = Instant::now();

    let mut cmd = Command::new(program);
    cmd.args(&spec.command[1..])
        .current_dir(&record.workdir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for k in PASS_ENV {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(&spec.env);
    for (k, v) in plinth_env(&record) {
        cmd.env(k, v);
    }

    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let usage = usage_record(
                &record,
                started_at,
                Utc::now(),
                0.0,
                0.0,
                EndReason::ExecError,
            );
            let outcome = Outcome {
                id: spec.id(),
                exit: ExitKind::ExecFailed(e.to_string()),
                end_reason: EndReason::ExecError,
                usage,
                stdout: LogInfo::default(),
                stderr: LogInfo::default(),
            };
            return write_outcome(dir, &record, &outcome);
        }
    };
    let pid = child.id();
    let pgid = pid;
    let me = procfs::read_self_stat();
    let run = RunRecord {
        pid,
        pgid,
        starttime: procfs::read_stat(pid).map_or(0, |s| s.starttime),
        supervisor_pid: std::process::id(),
        supervisor_starttime: me.map_or(0, |s| s.starttime),
        started_at,
    };
    files::write_json(&dir.join(PID_FILE), &run, true)?;

    let (tx, rx) = mpsc::channel::<(LogStream, io::Result<LogInfo>)>();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        spawn_capture(out, LogStream::Stdout, dir, spec.log_cap_bytes, tx.clone());
        readers += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_capture(err, LogStream::Stderr, dir, spec.log_cap_bytes, tx.clone());
        readers += 1;
    }
    drop(tx);

    let mut watch = Watch::new(&record, pgid, t0);
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(ExecError::io(dir, "wait for the command", e)),
        }
        watch.tick(dir)?;
        thread::sleep(POLL);
    };
    // A stop asked for just before the exit (the executor writes stop.json before it
    // signals) still decides the end reason.
    if watch.stop.is_none()
        && let Some(req) = files::read_json::<StopRequest>(&dir.join(STOP_FILE))?
    {
        watch.stop = Some((req, Instant::now()));
    }
    watch.clean_up_group()?;

    let mut logs: BTreeMap<&'static str, LogInfo> = BTreeMap::new();
    let drain_deadline = Instant::now() + LOG_DRAIN_WAIT;
    for _ in 0..readers {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((stream, Ok(info))) => {
                logs.insert(stream.file_name(), info);
            }
            Ok((stream, Err(e))) => {
                eprintln!("plinth-exec-supervisor: {}: {e}", stream.file_name());
            }
            Err(_) => break,
        }
    }

    watch.sample();
    let self_ticks = procfs::read_self_stat().map_or(0, |s| s.cutime + s.cstime);
    let cpu_seconds = watch.cpu_ticks.max(self_ticks) as f64 / TICKS_PER_SECOND;
    let wall = t0.elapsed().as_secs_f64();
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => ExitKind::Code(code),
        (None, Some(sig)) => ExitKind::Signal(sig),
        (None, None) => ExitKind::Code(-1),
    };
    let end_reason = match (&watch.stop, &exit) {
        (Some((req, _)), _) => EndReason::from(req.reason),
        (None, ExitKind::Code(0)) => EndReason::Completed,
        (None, _) => EndReason::Failed,
    };
    let usage = usage_record(
        &record,
        started_at,
        Utc::now(),
        wall,
        cpu_seconds,
        end_reason,
    );
    let outcome = Outcome {
        id: spec.id(),
        exit,
        end_reason,
        usage,
        stdout: logs.get("stdout.log").copied().unwrap_or_default(),
        stderr: logs.get("stderr.log").copied().unwrap_or_default(),
    };
    write_outcome(dir, &record, &outcome)
}

/// The variables the executor sets for every attempt.
pub(crate) fn plinth_env(record: &AttemptRecord) -> Vec<(&'static str, String)> {
    let spec = &record.spec;
    let devices: Vec<String> = spec.gpus.iter().map(|g| g.index.to_string()).collect();
    let (job, rank, world, node) = match &spec.pod {
        Some(p) => (p.job.clone(), p.rank, p.world_size, p.node.clone()),
        None => (spec.job_id.clone(), 0, 1, String::new()),
    };
    vec![
        ("PLINTH_JOB_ID", job),
        ("PLINTH_RANK", rank.to_string()),
        ("PLINTH_WORLD_SIZE", world.to_string()),
        ("PLINTH_NODE", node),
        ("PLINTH_ATTEMPT", spec.attempt.to_string()),
        ("PLINTH_WORKDIR", record.workdir.display().to_string()),
        (
            "PLINTH_CHECKPOINT_DIR",
            record.checkpoint_dir.display().to_string(),
        ),
        ("CUDA_VISIBLE_DEVICES", devices.join(",")),
    ]
}

pub(crate) fn usage_record(
    record: &AttemptRecord,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    wall_seconds: f64,
    cpu_seconds: f64,
    end_reason: EndReason,
) -> UsageRecord {
    let spec = &record.spec;
    let gpu_share: f64 = spec.gpus.iter().map(|g| g.share()).sum();
    UsageRecord {
        job_id: spec.job_id.clone(),
        attempt: spec.attempt,
        pool: spec.pool.clone(),
        procurement: spec.procurement,
        gpu_seconds: wall_seconds * gpu_share,
        cpu_seconds,
        wall_seconds,
        started_at,
        ended_at,
        end_reason,
        tags: spec.tags.clone(),
    }
}

/// Appends the usage record to the shared usage file, then writes `exit.json`, both durably:
/// once `exit.json` exists the usage record is in the file. (A crash between the two leaves a
/// usage record without an outcome; recovery then marks the attempt lost and does not append a
/// second record.)
pub(crate) fn write_outcome(
    dir: &Path,
    record: &AttemptRecord,
    outcome: &Outcome,
) -> Result<(), ExecError> {
    files::append_json_line(&record.usage_file, &outcome.usage)?;
    files::write_json(&dir.join(EXIT_FILE), outcome, true)
}

/// Run-time, idle and stop handling while the command runs.
struct Watch<'a> {
    record: &'a AttemptRecord,
    pgid: u32,
    t0: Instant,
    gpu: Option<GpuProbe>,
    /// The stop being carried out and when SIGTERM was sent.
    stop: Option<(StopRequest, Instant)>,
    killed: bool,
    last_sample: Instant,
    last_ticks: u64,
    /// CPU ticks of the group, summed over positive changes between samples (a process that
    /// leaves the group without being waited for by a member keeps its share).
    cpu_ticks: u64,
    idle_since: Option<Instant>,
}

impl<'a> Watch<'a> {
    fn new(record: &'a AttemptRecord, pgid: u32, t0: Instant) -> Self {
        let gpu = if record.spec.gpus.is_empty() {
            None
        } else {
            GpuProbe::detect()
        };
        Self {
            record,
            pgid,
            t0,
            gpu,
            stop: None,
            killed: false,
            last_sample: t0,
            last_ticks: 0,
            cpu_ticks: 0,
            idle_since: None,
        }
    }

    fn tick(&mut self, dir: &Path) -> Result<(), ExecError> {
        let spec = &self.record.spec;
        let now = Instant::now();
        if self.stop.is_none() {
            if let Some(req) = files::read_json::<StopRequest>(&dir.join(STOP_FILE))? {
                self.begin_stop(req)?;
            } else if spec
                .max_runtime
                .is_some_and(|max| now.duration_since(self.t0) >= max)
            {
                self.request_stop(dir, StopReason::Timeout)?;
            }
        }
        if let Some((req, at)) = &self.stop
            && !self.killed
            && now.duration_since(*at) >= req.grace
        {
            procfs::signal_group(self.pgid, GroupSignal::Kill)?;
            self.killed = true;
        }
        if now.duration_since(self.last_sample) >= spec.sample_interval {
            let snapshot = self.sample();
            files::write_json(&dir.join(STATUS_FILE), &snapshot, false)?;
            if let Some(policy) = spec.idle
                && self.stop.is_none()
                && snapshot.idle_seconds >= policy.timeout.as_secs_f64()
            {
                self.request_stop(dir, StopReason::Idle)?;
            }
        }
        Ok(())
    }

    /// Records a stop the supervisor starts itself; a stop already asked for wins.
    fn request_stop(&mut self, dir: &Path, reason: StopReason) -> Result<(), ExecError> {
        let req = StopRequest {
            reason,
            grace: self.record.spec.stop_grace,
            requested_at: Utc::now(),
        };
        let req = files::create_json_once(&dir.join(STOP_FILE), req)?;
        self.begin_stop(req)
    }

    fn begin_stop(&mut self, req: StopRequest) -> Result<(), ExecError> {
        procfs::signal_group(self.pgid, GroupSignal::Term)?;
        self.stop = Some((req, Instant::now()));
        Ok(())
    }

    fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let interval = now.duration_since(self.last_sample).as_secs_f64();
        let ticks = procfs::group_ticks(self.pgid);
        let delta = ticks.saturating_sub(self.last_ticks);
        self.cpu_ticks += delta;
        self.last_ticks = ticks;
        let cpu_cores = if interval > 0.0 {
            delta as f64 / TICKS_PER_SECOND / interval
        } else {
            0.0
        };
        let (gpu_util_pct, gpu_memory_mib) = self.sample_gpu();
        let mut idle_seconds = 0.0;
        if let Some(policy) = self.record.spec.idle {
            let busy = match gpu_util_pct {
                Some(util) => util >= policy.gpu_util_threshold_pct,
                None => cpu_cores >= policy.cpu_threshold_cores,
            };
            if busy {
                self.idle_since = None;
            } else {
                let since = *self.idle_since.get_or_insert(self.last_sample);
                idle_seconds = now.duration_since(since).as_secs_f64();
            }
        }
        self.last_sample = now;
        Snapshot {
            sampled_at: Utc::now(),
            wall_seconds: now.duration_since(self.t0).as_secs_f64(),
            cpu_seconds: self.cpu_ticks as f64 / TICKS_PER_SECOND,
            cpu_cores,
            gpu_util_pct,
            gpu_memory_mib,
            idle_seconds,
        }
    }

    /// Highest utilization and summed memory of the attempt's GPUs (needs a driver; not
    /// exercised without one).
    fn sample_gpu(&self) -> (Option<f64>, Option<f64>) {
        let Some(readings) = self.gpu.as_ref().and_then(GpuProbe::sample) else {
            return (None, None);
        };
        let mine: Vec<_> = readings
            .iter()
            .filter(|r| self.record.spec.gpus.iter().any(|g| g.index == r.index))
            .collect();
        if mine.is_empty() {
            return (None, None);
        }
        let util = mine.iter().map(|r| r.util_pct).fold(0.0, f64::max);
        let mem = mine.iter().map(|r| r.memory_mib).sum();
        (Some(util), Some(mem))
    }

    /// After the main process has exited: processes left in its group get SIGTERM (or the
    /// stop in progress continues), then SIGKILL after the grace.
    fn clean_up_group(&mut self) -> Result<(), ExecError> {
        if !procfs::group_alive(self.pgid) {
            return Ok(());
        }
        let deadline = match &self.stop {
            Some((req, at)) => *at + req.grace,
            None => {
                procfs::signal_group(self.pgid, GroupSignal::Term)?;
                Instant::now() + self.record.spec.stop_grace
            }
        };
        let mut killed_at: Option<Instant> = None;
        while procfs::group_alive(self.pgid) {
            let now = Instant::now();
            match killed_at {
                None if now >= deadline => {
                    procfs::signal_group(self.pgid, GroupSignal::Kill)?;
                    killed_at = Some(now);
                }
                Some(at) if now.duration_since(at) > Duration::from_secs(10) => break,
                _ => {}
            }
            thread::sleep(POLL);
        }
        Ok(())
    }
}

fn spawn_capture(
    src: impl Read + Send + 'static,
    stream: LogStream,
    dir: &Path,
    cap: u64,
    tx: mpsc::Sender<(LogStream, io::Result<LogInfo>)>,
) {
    let path = dir.join(stream.file_name());
    thread::spawn(move || {
        let res = capture(src, &path, cap);
        let _ = tx.send((stream, res));
    });
}

/// Copies `src` into `path`, keeping the first bytes up to `cap` (the last of them replaced by a
/// marker line once output is dropped) and reading and dropping everything after, so the
/// writer never blocks and the file never exceeds `cap`.
pub(crate) fn capture(mut src: impl Read, path: &Path, cap: u64) -> io::Result<LogInfo> {
    let mut file = File::create(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut info = LogInfo::default();
    let marker = format!("\n[plinth: log capped at {cap} bytes; further output dropped]\n");
    let marker = &marker.as_bytes()[..marker.len().min(usize::try_from(cap).unwrap_or(0))];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let n64 = n as u64;
        if info.bytes_dropped > 0 {
            info.bytes_dropped += n64;
            continue;
        }
        if info.bytes_kept + n64 <= cap {
            file.write_all(&buf[..n])?;
            info.bytes_kept += n64;
            continue;
        }
        // First overflow: keep what fits before the marker, then write the marker.
        let keep_total = cap - marker.len() as u64;
        if info.bytes_kept <= keep_total {
            let take = (keep_total - info.bytes_kept).min(n64);
            file.write_all(&buf[..usize::try_from(take).unwrap_or(0)])?;
            info.bytes_kept += take;
            info.bytes_dropped += n64 - take;
        } else {
            info.bytes_dropped += info.bytes_kept - keep_total + n64;
            info.bytes_kept = keep_total;
            file.set_len(keep_total)?;
            file.seek(SeekFrom::Start(keep_total))?;
        }
        file.write_all(marker)?;
    }
    file.sync_all()?;
    Ok(info)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_everything_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        let info = capture(&b"hello\n"[..], &p, 1024).unwrap();
        assert_eq!(
            info,
            LogInfo {
                bytes_kept: 6,
                bytes_dropped: 0
            }
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"hello\n");
    }

    #[test]
    fn capture_caps_and_marks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        let input = vec![b'x'; 10_000];
        let info = capture(&input[..], &p, 2048).unwrap();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 2048);
        assert_eq!(info.bytes_kept + info.bytes_dropped, 10_000);
        let text = String::from_utf8(data).unwrap();
        assert!(text.ends_with("[plinth: log capped at 2048 bytes; further output dropped]\n"));
        assert!(text.starts_with("xxxx"));
    }

    #[test]
    fn capture_exactly_at_cap_is_not_marked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        let input = vec![b'y'; 1024];
        let info = capture(&input[..], &p, 1024).unwrap();
        assert_eq!(info.bytes_dropped, 0);
        assert_eq!(std::fs::read(&p).unwrap(), input);
    }
}
