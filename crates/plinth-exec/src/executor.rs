//! The server-side handle: starts supervisors, asks them to stop, reads their state.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::error::ExecError;
use crate::files::{
    self, ATTEMPT_FILE, EXIT_FILE, PID_FILE, STATUS_FILE, STOP_FILE, SUPERVISOR_LOG, USAGE_FILE,
};
use crate::procfs::{self, GroupSignal};
use crate::supervisor::{self, AttemptRecord, RunRecord};
use crate::types::{
    AttemptId, AttemptSpec, AttemptStatus, EndReason, ExitKind, LogChunk, LogStream, Outcome,
    Recovered, RecoveredState, RunningAttempt, Snapshot, StopReason, StopRequest, UsageRecord,
};

/// How long [`Executor::start`] waits for the supervisor to report the command started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// The program that runs [`supervisor::main`]: the `plinth-exec-supervisor` binary, or the
/// `plinth` binary with its hidden supervisor subcommand in `args`. The attempt directory is
/// appended as the last argument.
#[derive(Debug, Clone)]
pub struct SupervisorProgram {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl SupervisorProgram {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// Runs attempts as local process groups. All state is kept in files under `root`:
///
/// ```text
/// root/usage.jsonl                      one UsageRecord per ended attempt
/// root/jobs/<job>/checkpoint/           default checkpoint dir, shared by the job's attempts
/// root/jobs/<job>/<attempt>/attempt.json   resolved spec (written before start)
///                           pid.json       pids and kernel start times (supervisor, command)
///                           stop.json      the stop asked for, if any
///                           status.json    latest usage sample
///                           exit.json      the outcome
///                           stdout.log stderr.log supervisor.log
///                           work/          default working directory
/// ```
#[derive(Debug)]
pub struct Executor {
    root: PathBuf,
    supervisor: SupervisorProgram,
    /// Supervisors started by this process, reaped as they end.
    children: Mutex<Vec<Child>>,
}

impl Executor {
    /// Opens (creating it if needed) the executor root.
    pub fn new(root: impl Into<PathBuf>, supervisor: SupervisorProgram) -> Result<Self, ExecError> {
        let root = root.into();
        files::create_dir_all(&root.join("jobs"))?;
        Ok(Self {
            root,
            supervisor,
            children: Mutex::new(Vec::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the JSON-lines usage file.
    pub fn usage_file(&self) -> PathBuf {
        self.root.join(USAGE_FILE)
    }

    /// Directory of an attempt (`root/jobs/<job>/<attempt>`).
    pub fn attempt_dir(&self, id: &AttemptId) -> Result<PathBuf, ExecError> {
        validate_job_id(&id.job_id)?;
        Ok(self
            .root
            .join("jobs")
            .join(&id.job_id)
            .join(id.attempt.to_string()))
    }

    /// Starts an attempt and returns once its command runs. A command that cannot be started
    /// returns [`ExecError::Spawn`] (naming the command and the OS error), and the attempt is
    /// recorded as ended with reason `exec_error`.
    pub fn start(&self, spec: AttemptSpec) -> Result<RunningAttempt, ExecError> {
        validate_spec(&spec)?;
        let id = spec.id();
        let dir = self.attempt_dir(&id)?;
        if dir.join(ATTEMPT_FILE).exists() {
            return Err(ExecError::AlreadyExists { id });
        }
        files::create_dir_all(&dir)?;
        let workdir = spec.workdir.clone().unwrap_or_else(|| dir.join("work"));
        let checkpoint_dir = spec.checkpoint_dir.clone().unwrap_or_else(|| {
            let job = spec.pod.as_ref().map_or(&spec.job_id, |p| &p.job);
            self.root.join("jobs").join(job).join("checkpoint")
        });
        files::create_dir_all(&workdir)?;
        files::create_dir_all(&checkpoint_dir)?;
        let record = AttemptRecord {
            spec,
            workdir,
            checkpoint_dir,
            usage_file: self.usage_file(),
            created_at: Utc::now(),
        };
        files::write_json(&dir.join(ATTEMPT_FILE), &record, true)?;

        let log_path = dir.join(SUPERVISOR_LOG);
        let log = File::create(&log_path).map_err(|e| ExecError::io(&log_path, "create", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ExecError::io(&log_path, "open", e))?;
        let mut child = Command::new(&self.supervisor.program)
            .args(&self.supervisor.args)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own group: signals meant for the server (Ctrl-C) do not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| ExecError::Supervisor {
                id: id.clone(),
                message: format!("cannot start `{}`: {e}", self.supervisor.program.display()),
            })?;

        let deadline = Instant::now() + START_TIMEOUT;
        let result = loop {
            if let Some(outcome) = files::read_json::<Outcome>(&dir.join(EXIT_FILE))? {
                break match outcome.exit {
                    ExitKind::ExecFailed(message) => Err(ExecError::Spawn {
                        id: id.clone(),
                        command: record.spec.command.first().cloned().unwrap_or_default(),
                        message,
                    }),
                    _ => self.running(&id, &dir, &record),
                };
            }
            if dir.join(PID_FILE).exists() {
                break self.running(&id, &dir, &record);
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    // Re-check: it may have written its files just before exiting.
                    if dir.join(PID_FILE).exists() || dir.join(EXIT_FILE).exists() {
                        continue;
                    }
                    break Err(ExecError::Supervisor {
                        id: id.clone(),
                        message: format!(
                            "exited ({status}) before starting the command: {}",
                            tail_of(&log_path)
                        ),
                    });
                }
                Ok(None) => {}
                Err(e) => break Err(ExecError::io(&dir, "wait for the supervisor", e)),
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break Err(ExecError::Supervisor {
                    id: id.clone(),
                    message: format!(
                        "did not report within {}s: {}",
                        START_TIMEOUT.as_secs(),
                        tail_of(&log_path)
                    ),
                });
            }
            thread::sleep(POLL);
        };
        self.lock_children().push(child);
        self.reap();
        result
    }

    /// Asks a running attempt to stop: the reason is recorded, the process group gets SIGTERM
    /// now and SIGKILL after `grace` (carried out by the supervisor, so it holds across a server
    /// restart). The first stop of an attempt wins; stopping an ended attempt does nothing.
    pub fn stop(
        &self,
        id: &AttemptId,
        reason: StopReason,
        grace: Duration,
    ) -> Result<(), ExecError> {
        let dir = self.existing_dir(id)?;
        if dir.join(EXIT_FILE).exists() {
            return Ok(());
        }
        let req = StopRequest {
            reason,
            grace,
            requested_at: Utc::now(),
        };
        let req = files::create_json_once(&dir.join(STOP_FILE), req)?;
        let Some(run) = files::read_json::<RunRecord>(&dir.join(PID_FILE))? else {
            // Still starting: the supervisor reads stop.json as soon as the command runs.
            return Ok(());
        };
        if procfs::is_alive(run.supervisor_pid, run.supervisor_starttime) {
            return procfs::signal_group(run.pgid, GroupSignal::Term);
        }
        // No supervisor (it crashed): stop the group from here if it is still the attempt's.
        if procfs::is_alive(run.pid, run.starttime) {
            procfs::signal_group(run.pgid, GroupSignal::Term)?;
            let (pid, starttime, pgid, grace) = (run.pid, run.starttime, run.pgid, req.grace);
            thread::spawn(move || {
                thread::sleep(grace);
                if procfs::is_alive(pid, starttime) {
                    let _ = procfs::signal_group(pgid, GroupSignal::Kill);
                }
            });
        }
        Ok(())
    }

    /// Where the attempt stands.
    pub fn status(&self, id: &AttemptId) -> Result<AttemptStatus, ExecError> {
        let dir = self.existing_dir(id)?;
        if let Some(outcome) = files::read_json::<Outcome>(&dir.join(EXIT_FILE))? {
            self.reap();
            return Ok(AttemptStatus::Finished(outcome));
        }
        let record = self.record(id, &dir)?;
        let attempt = self.running(id, &dir, &record)?;
        let snapshot = files::read_json::<Snapshot>(&dir.join(STATUS_FILE))?;
        let stop = files::read_json::<StopRequest>(&dir.join(STOP_FILE))?;
        Ok(AttemptStatus::Running {
            attempt,
            snapshot,
            stop,
        })
    }

    /// Waits up to `timeout` for the attempt to end; `None` if it still runs.
    pub fn wait(&self, id: &AttemptId, timeout: Duration) -> Result<Option<Outcome>, ExecError> {
        let dir = self.existing_dir(id)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outcome) = files::read_json::<Outcome>(&dir.join(EXIT_FILE))? {
                self.reap();
                return Ok(Some(outcome));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// Reads up to `max_bytes` of a log from `offset`.
    pub fn read_log(
        &self,
        id: &AttemptId,
        stream: LogStream,
        offset: u64,
        max_bytes: usize,
    ) -> Result<LogChunk, ExecError> {
        let dir = self.existing_dir(id)?;
        // Checked before reading: once exit.json exists the log files are final.
        let ended = dir.join(EXIT_FILE).exists();
        let path = dir.join(stream.file_name());
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(LogChunk {
                    data: Vec::new(),
                    next_offset: offset,
                    complete: ended,
                });
            }
            Err(e) => return Err(ExecError::io(&path, "open", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| ExecError::io(&path, "stat", e))?
            .len();
        let mut data = Vec::new();
        if offset < len {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| ExecError::io(&path, "seek", e))?;
            (&mut file)
                .take(max_bytes as u64)
                .read_to_end(&mut data)
                .map_err(|e| ExecError::io(&path, "read", e))?;
        }
        let next_offset = offset + data.len() as u64;
        Ok(LogChunk {
            data,
            next_offset,
            complete: ended && next_offset >= len,
        })
    }

    /// Like [`Executor::read_log`], but waits up to `wait` for new bytes while the attempt runs
    /// (`plinth job logs -f` calls this in a loop with the returned offset).
    pub fn follow_log(
        &self,
        id: &AttemptId,
        stream: LogStream,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<LogChunk, ExecError> {
        let deadline = Instant::now() + wait;
        loop {
            let chunk = self.read_log(id, stream, offset, max_bytes)?;
            if !chunk.data.is_empty() || chunk.complete || Instant::now() >= deadline {
                return Ok(chunk);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// After a restart: every attempt under the root, adopted (its supervisor still runs, same
    /// pid and kernel start time), exited (with the outcome its supervisor wrote), or lost (no
    /// supervisor and no outcome: an outcome with reason `lost` and the last sampled usage is
    /// recorded, and any process still left in its group is killed, so a retry cannot run
    /// next to it). Sorted by job and attempt.
    pub fn recover(&self) -> Result<Vec<Recovered>, ExecError> {
        let jobs = self.root.join("jobs");
        let mut found = Vec::new();
        for job in read_dir_names(&jobs)? {
            if validate_job_id(&job).is_err() {
                continue;
            }
            for attempt in read_dir_names(&jobs.join(&job))? {
                let Ok(n) = attempt.parse::<u32>() else {
                    continue;
                };
                let dir = jobs.join(&job).join(&attempt);
                if dir.join(ATTEMPT_FILE).exists() {
                    found.push(AttemptId::new(job.clone(), n));
                }
            }
        }
        found.sort();
        let mut out = Vec::with_capacity(found.len());
        for id in found {
            let state = self.recover_one(&id)?;
            out.push(Recovered { id, state });
        }
        Ok(out)
    }

    fn recover_one(&self, id: &AttemptId) -> Result<RecoveredState, ExecError> {
        let dir = self.attempt_dir(id)?;
        let record = self.record(id, &dir)?;
        let exit_path = dir.join(EXIT_FILE);
        if let Some(outcome) = files::read_json::<Outcome>(&exit_path)? {
            return Ok(if outcome.end_reason == EndReason::Lost {
                RecoveredState::Lost(outcome)
            } else {
                RecoveredState::Exited(outcome)
            });
        }
        let run = files::read_json::<RunRecord>(&dir.join(PID_FILE))?;
        if let Some(run) = run {
            if procfs::is_alive(run.supervisor_pid, run.supervisor_starttime) {
                return Ok(RecoveredState::Adopted(running_attempt(
                    id, &dir, &record, &run,
                )));
            }
            // The supervisor may have finished between the two checks.
            if let Some(outcome) = files::read_json::<Outcome>(&exit_path)? {
                return Ok(RecoveredState::Exited(outcome));
            }
            // Only a main process with the recorded start time is the attempt's; a process
            // that merely holds the same pid number is left alone.
            if procfs::is_alive(run.pid, run.starttime) {
                procfs::signal_group(run.pgid, GroupSignal::Kill)?;
            }
        }
        let snapshot = files::read_json::<Snapshot>(&dir.join(STATUS_FILE))?;
        let started_at = run.map_or(record.created_at, |r| r.started_at);
        let (ended_at, wall, cpu) = match &snapshot {
            Some(s) => (s.sampled_at, s.wall_seconds, s.cpu_seconds),
            None => (started_at, 0.0, 0.0),
        };
        let usage =
            supervisor::usage_record(&record, started_at, ended_at, wall, cpu, EndReason::Lost);
        let outcome = Outcome {
            id: id.clone(),
            exit: ExitKind::Lost,
            end_reason: EndReason::Lost,
            usage,
            stdout: Default::default(),
            stderr: Default::default(),
        };
        // A corrupt usage file must not block recovery.
        let already_metered = self
            .usage_records()
            .unwrap_or_default()
            .iter()
            .any(|u| u.job_id == id.job_id && u.attempt == id.attempt);
        if already_metered {
            files::write_json(&exit_path, &outcome, true)?;
        } else {
            supervisor::write_outcome(&dir, &record, &outcome)?;
        }
        Ok(RecoveredState::Lost(outcome))
    }

    /// All usage records written so far. A last line cut short by a crash is skipped; any
    /// other line that does not parse is an error naming the line.
    pub fn usage_records(&self) -> Result<Vec<UsageRecord>, ExecError> {
        let path = self.usage_file();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ExecError::io(&path, "read", e)),
        };
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<UsageRecord>(line) {
                Ok(r) => out.push(r),
                Err(_) if !complete && i + 1 == lines.len() => {}
                Err(e) => {
                    return Err(ExecError::Corrupt {
                        path,
                        message: format!("line {}: {e}", i + 1),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Reaps supervisors of this process that have ended.
    pub fn reap(&self) {
        self.lock_children()
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }

    fn lock_children(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn existing_dir(&self, id: &AttemptId) -> Result<PathBuf, ExecError> {
        let dir = self.attempt_dir(id)?;
        if !dir.join(ATTEMPT_FILE).exists() {
            return Err(ExecError::NotFound { id: id.clone() });
        }
        Ok(dir)
    }

    fn record(&self, id: &AttemptId, dir: &Path) -> Result<AttemptRecord, ExecError> {
        files::read_json(&dir.join(ATTEMPT_FILE))?
            .ok_or_else(|| ExecError::NotFound { id: id.clone() })
    }

    fn running(
        &self,
        id: &AttemptId,
        dir: &Path,
        record: &AttemptRecord,
    ) -> Result<RunningAttempt, ExecError> {
        let run = files::read_json::<RunRecord>(&dir.join(PID_FILE))?.ok_or_else(|| {
            ExecError::Supervisor {
                id: id.clone(),
                message: "the command has not started yet".to_owned(),
            }
        })?;
        Ok(running_attempt(id, dir, record, &run))
    }
}

fn running_attempt(
    id: &AttemptId,
    dir: &Path,
    record: &AttemptRecord,
    run: &RunRecord,
) -> RunningAttempt {
    RunningAttempt {
        id: id.clone(),
        pid: run.pid,
        pgid: run.pgid,
        supervisor_pid: run.supervisor_pid,
        started_at: run.started_at,
        dir: dir.to_owned(),
        workdir: record.workdir.clone(),
        checkpoint_dir: record.checkpoint_dir.clone(),
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, ExecError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ExecError::io(dir, "list", e)),
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

/// Last bytes of the supervisor log, for error messages.
fn tail_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    let start = text.char_indices().rev().nth(500).map_or(0, |(i, _)| i);
    if text.is_empty() {
        "no output".to_owned()
    } else {
        text[start..].to_owned()
    }
}

fn invalid(job_id: &str, message: impl Into<String>) -> ExecError {
    ExecError::InvalidSpec {
        job_id: job_id.to_owned(),
        message: message.into(),
    }
}

fn validate_job_id(job_id: &str) -> Result<(), ExecError> {
    let ok = !job_id.is_empty()
        && job_id.len() <= 128
        && !job_id.starts_with('.')
        && job_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            job_id,
            "job id must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with `.`",
        ))
    }
}

fn validate_spec(spec: &AttemptSpec) -> Result<(), ExecError> {
    validate_job_id(&spec.job_id)?;
    if let Some(p) = &spec.pod {
        validate_job_id(&p.job)?;
        if p.rank >= p.world_size {
            return Err(invalid(
                &spec.job_id,
                format!(
                    "pod rank {} is not below the world size {}",
                    p.rank, p.world_size
                ),
            ));
        }
    }
    let j = &spec.job_id;
    match spec.command.first() {
        None => return Err(invalid(j, "command is empty")),
        Some(p) if p.is_empty() => return Err(invalid(j, "command[0] is an empty string")),
        _ => {}
    }
    if let Some(i) = spec.command.iter().position(|a| a.contains('\0')) {
        return Err(invalid(j, format!("command[{i}] contains a NUL byte")));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(j, format!("env `{k}`: not a valid variable")));
        }
        if k.starts_with("PLINTH_") || k == "CUDA_VISIBLE_DEVICES" {
            return Err(invalid(j, format!("env `{k}`: set by the executor")));
        }
    }
    if spec.log_cap_bytes < 1024 {
        return Err(invalid(
            j,
            format!(
                "log_cap_bytes must be at least 1024, got {}",
                spec.log_cap_bytes
            ),
        ));
    }
    if spec.sample_interval < Duration::from_millis(50) {
        return Err(invalid(j, "sample_interval must be at least 50ms"));
    }
    for (i, g) in spec.gpus.iter().enumerate() {
        if let Some(f) = g.fraction
            && !(f.is_finite() && f > 0.0 && f <= 1.0)
        {
            return Err(invalid(
                j,
                format!("gpus[{i}].fraction must be in (0, 1], got {f}"),
            ));
        }
        if spec.gpus[..i].iter().any(|o| o.index == g.index) {
            return Err(invalid(
                j,
                format!("gpus[{i}]: GPU {} listed twice", g.index),
            ));
        }
    }
    if let Some(p) = spec.idle {
        if p.timeout.is_zero() {
            return Err(invalid(j, "idle.timeout must be positive"));
        }
        if !(p.gpu_util_threshold_pct.is_finite()
            && (0.0..=100.0).contains(&p.gpu_util_threshold_pct))
        {
            return Err(invalid(
                j,
                "idle.gpu_util_threshold_pct must be in [0, 100]",
            ));
        }
        if !(p.cpu_threshold_cores.is_finite() && p.cpu_threshold_cores >= 0.0) {
            return Err(invalid(j, "idle.cpu_threshold_cores must be >= 0"));
        }
    }
    if spec.max_runtime.is_some_and(|d| d.is_zero()) {
        return Err(invalid(j, "max_runtime must be positive"));
    }
    if spec.pool.is_empty() {
        return Err(invalid(j, "pool is empty"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_cannot_escape_the_root() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b"] {
            let err = validate_job_id(bad).unwrap_err().to_string();
            assert!(err.contains("job id must be"), "{bad}: {err}");
        }
        validate_job_id("train-7.v2_x").unwrap();
    }

    #[test]
    fn spec_validation_names_the_field() {
        let mut s = AttemptSpec::new("j", 1, vec![]);
        assert!(
            validate_spec(&s)
                .unwrap_err()
                .to_string()
                .contains("command is empty")
        );
        s.command = vec!["true".into()];
        s.env.insert("PLINTH_JOB_ID".into(), "x".into());
        assert!(
            validate_spec(&s)
                .unwrap_err()
                .to_string()
                .contains("env `PLINTH_JOB_ID`")
        );
        s.env.clear();
        s.log_cap_bytes = 10;
        assert!(
            validate_spec(&s)
                .unwrap_err()
                .to_string()
                .contains("log_cap_bytes")
        );
        s.log_cap_bytes = 4096;
        s.gpus = vec![crate::GpuSlot {
            index: 0,
            fraction: Some(1.5),
        }];
        assert!(
            validate_spec(&s)
                .unwrap_err()
                .to_string()
                .contains("gpus[0].fraction")
        );
        s.gpus = vec![crate::GpuSlot::whole(0), crate::GpuSlot::whole(0)];
        assert!(
            validate_spec(&s)
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        s.gpus.clear();
        validate_spec(&s).unwrap();
    }
}
