//! The executor's data types: what an attempt is asked to run and what it reports.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plinth_types::spec::Procurement;
use serde::{Deserialize, Serialize};

/// One attempt of one job: `job_id` is used as a directory name, so it is limited to
/// `A–Z a–z 0–9 . _ -` (1–128 characters, not starting with `.`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    pub job_id: String,
    pub attempt: u32,
}

impl AttemptId {
    pub fn new(job_id: impl Into<String>, attempt: u32) -> Self {
        Self {
            job_id: job_id.into(),
            attempt,
        }
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} attempt {}", self.job_id, self.attempt)
    }
}

/// A GPU given to an attempt: its device index, and the fraction of it the attempt holds
/// (`None` = the whole GPU). The fraction is used for metering (GPU-seconds = wall seconds ×
/// the sum of fractions); it does not limit what the process can use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuSlot {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
}

impl GpuSlot {
    pub fn whole(index: u32) -> Self {
        Self {
            index,
            fraction: None,
        }
    }

    pub(crate) fn share(&self) -> f64 {
        self.fraction.unwrap_or(1.0)
    }
}

/// When an attempt counts as idle: a job with GPUs (on a machine with an NVIDIA driver) is idle
/// while the highest utilization of its GPUs stays under `gpu_util_threshold_pct`; a CPU job (or
/// a GPU job where no driver is present) is idle while its process group uses less than
/// `cpu_threshold_cores` of CPU. An attempt idle for `timeout` is stopped with reason `idle`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IdlePolicy {
    pub timeout: Duration,
    pub gpu_util_threshold_pct: f64,
    pub cpu_threshold_cores: f64,
}

impl IdlePolicy {
    /// Idle after `timeout` under 5 % GPU utilization, or under 0.01 cores for a CPU job.
    pub fn after(timeout: Duration) -> Self {
        Self {
            timeout,
            gpu_util_threshold_pct: 5.0,
            cpu_threshold_cores: 0.01,
        }
    }
}

/// What to run. Build one with [`AttemptSpec::new`] and set the fields you need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSpec {
    pub job_id: String,
    pub attempt: u32,
    /// Program and arguments; the program is looked up in `PATH` unless it contains a `/`.
    pub command: Vec<String>,
    /// Extra environment variables. Names starting with `PLINTH_` and `CUDA_VISIBLE_DEVICES`
    /// are set by the executor and may not be given here.
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` = `<root>/jobs/<job>/<attempt>/work`, created on start.
    pub workdir: Option<PathBuf>,
    /// GPUs; `CUDA_VISIBLE_DEVICES` is set to their indices, and to the empty string when there
    /// are none, so a CPU attempt never sees a GPU.
    pub gpus: Vec<GpuSlot>,
    /// Checkpoint directory shared by all attempts of the job; `None` =
    /// `<root>/jobs/<job>/checkpoint`. Created on start; exported as `PLINTH_CHECKPOINT_DIR`.
    pub checkpoint_dir: Option<PathBuf>,
    /// Cap of each of `stdout.log` and `stderr.log`, in bytes (at least 1024).
    pub log_cap_bytes: u64,
    /// The attempt is stopped with reason `timeout` after this long.
    pub max_runtime: Option<Duration>,
    pub idle: Option<IdlePolicy>,
    /// Grace between SIGTERM and SIGKILL for stops the supervisor starts itself (timeout, idle)
    /// and for processes left in the group after the main process exits.
    pub stop_grace: Duration,
    /// How often the supervisor samples CPU/GPU use (at least 50 ms).
    pub sample_interval: Duration,
    /// Pool and procurement the attempt runs on, copied into its usage record.
    pub pool: String,
    pub procurement: Procurement,
    /// Job tags (team, project, env, model, owner …), copied into its usage record.
    pub tags: BTreeMap<String, String>,
    /// The pod this attempt is of a job that runs as several (a gang); `None`: the job's
    /// only pod (rank 0 of 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
}

/// One pod of a job's attempt: exported as `PLINTH_JOB_ID` (the job, not the pod's own
/// `job_id`), `PLINTH_RANK`, `PLINTH_WORLD_SIZE` and `PLINTH_NODE`. The pods of a job share
/// its default checkpoint directory `<root>/jobs/<job>/checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    pub job: String,
    pub rank: u32,
    pub world_size: u32,
    pub node: String,
}

impl AttemptSpec {
    /// A spec with defaults: 16 MiB log cap, no run-time limit, no idle policy, 10 s grace,
    /// 1 s sampling, pool `local`, on-demand, no GPUs.
    pub fn new(job_id: impl Into<String>, attempt: u32, command: Vec<String>) -> Self {
        Self {
            job_id: job_id.into(),
            attempt,
            command,
            env: BTreeMap::new(),
            workdir: None,
            gpus: Vec::new(),
            checkpoint_dir: None,
            log_cap_bytes: 16 * 1024 * 1024,
            max_runtime: None,
            idle: None,
            stop_grace: Duration::from_secs(10),
            sample_interval: Duration::from_secs(1),
            pool: "local".to_owned(),
            procurement: Procurement::OnDemand,
            tags: BTreeMap::new(),
            pod: None,
        }
    }

    pub fn id(&self) -> AttemptId {
        AttemptId::new(self.job_id.clone(), self.attempt)
    }
}

/// Why a stop was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Cancel,
    Timeout,
    Idle,
    /// The scheduler took the GPUs back for higher-priority work.
    Preempted,
    /// The node is going away (e.g. a spot interruption).
    Interrupted,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Timeout => "timeout",
            Self::Idle => "idle",
            Self::Preempted => "preempted",
            Self::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stop in progress, as stored in the attempt's `stop.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    pub reason: StopReason,
    pub grace: Duration,
    pub requested_at: DateTime<Utc>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Exited with code 0 without a stop.
    Completed,
    /// Exited non-zero or was killed by a signal nobody here sent.
    Failed,
    Cancel,
    Timeout,
    Idle,
    Preempted,
    Interrupted,
    /// The command could not be started.
    ExecError,
    /// The supervisor vanished (machine reboot, killed) before the attempt ended.
    Lost,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancel => "cancel",
            Self::Timeout => "timeout",
            Self::Idle => "idle",
            Self::Preempted => "preempted",
            Self::Interrupted => "interrupted",
            Self::ExecError => "exec_error",
            Self::Lost => "lost",
        }
    }
}

impl From<StopReason> for EndReason {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::Cancel => Self::Cancel,
            StopReason::Timeout => Self::Timeout,
            StopReason::Idle => Self::Idle,
            StopReason::Preempted => Self::Preempted,
            StopReason::Interrupted => Self::Interrupted,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the main process of an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
    /// The command could not be started; the message names the command and the OS error.
    ExecFailed(String),
    /// Unknown: the supervisor vanished.
    Lost,
}

/// One attempt's metered usage, the input of the cost engine. GPU-seconds are allocated time
/// (wall seconds × the GPU fractions held), not utilization-weighted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub job_id: String,
    pub attempt: u32,
    pub pool: String,
    pub procurement: Procurement,
    pub gpu_seconds: f64,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub end_reason: EndReason,
    pub tags: BTreeMap<String, String>,
}

/// Bytes of one log stream kept in its file and dropped past the cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogInfo {
    pub bytes_kept: u64,
    pub bytes_dropped: u64,
}

/// The final record of an attempt (`exit.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: AttemptId,
    pub exit: ExitKind,
    pub end_reason: EndReason,
    pub usage: UsageRecord,
    #[serde(default)]
    pub stdout: LogInfo,
    #[serde(default)]
    pub stderr: LogInfo,
}

/// The latest usage sample of a running attempt (`status.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub sampled_at: DateTime<Utc>,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// CPU cores used over the last sample interval.
    pub cpu_cores: f64,
    /// Highest utilization (percent) of the attempt's GPUs; `None` without a driver or GPUs.
    pub gpu_util_pct: Option<f64>,
    /// Memory used on the attempt's GPUs, MiB; `None` without a driver or GPUs.
    pub gpu_memory_mib: Option<f64>,
    /// How long the attempt has been idle by its policy (0 when busy or without a policy).
    pub idle_seconds: f64,
}

/// A started (or adopted) attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningAttempt {
    pub id: AttemptId,
    /// Pid of the main process; its process group id is the same number.
    pub pid: u32,
    pub pgid: u32,
    /// Pid of the supervisor.
    pub supervisor_pid: u32,
    pub started_at: DateTime<Utc>,
    pub dir: PathBuf,
    pub workdir: PathBuf,
    pub checkpoint_dir: PathBuf,
}

/// Where an attempt stands.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptStatus {
    Running {
        attempt: RunningAttempt,
        snapshot: Option<Snapshot>,
        stop: Option<StopRequest>,
    },
    Finished(Outcome),
}

/// What [`crate::Executor::recover`] found for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub id: AttemptId,
    pub state: RecoveredState,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecoveredState {
    /// Still running under its supervisor; it is managed again as if started here.
    Adopted(RunningAttempt),
    /// Ended (possibly while the server was away); its outcome.
    Exited(Outcome),
    /// Its supervisor is gone and no outcome was written: the caller retries it. An outcome with
    /// reason `lost` (and the usage last sampled) has been recorded.
    Lost(Outcome),
}

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout.log",
            Self::Stderr => "stderr.log",
        }
    }
}

/// Bytes read from a log: `data` starts at the requested offset; `next_offset` is where to read
/// next; `complete` is true once the attempt has ended and everything has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub data: Vec<u8>,
    pub next_offset: u64,
    pub complete: bool,
}
