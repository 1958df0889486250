//! Jobs: what a user submits (`JobSpec`), what the server records as it runs them
//! (`JobStatus` with its attempts), and the view the API returns (`Job`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::spec::WorkloadClass;

/// What to run and what it needs. Immutable once submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// Program and arguments (no shell); at least one element.
    pub command: Vec<String>,
    /// Owning team.
    pub team: String,
    /// Queue of the team the job waits in.
    pub queue: String,
    /// Workload class (decides spot and CPU-pool rules).
    #[serde(default = "default_class")]
    pub class: WorkloadClass,
    /// Nodes (pods) of a gang job, 1 by default. Above 1 the job runs as that many pods,
    /// each with `gpus`, `cpus` and `memoryGib`, admitted all together or not at all (Slurm's
    /// `--nodes`, a Kueue pod set's `count`).
    #[serde(default = "default_nodes", skip_serializing_if = "is_one")]
    pub nodes: u32,
    /// Accelerators of each node (whole, or a share of one below 1, e.g. 0.5).
    #[serde(default)]
    pub gpus: f64,
    /// Required accelerator type, e.g. `nvidia-h100-80gb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    /// CPU cores (default 1).
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory in GiB (default 1).
    #[serde(default = "default_memory")]
    pub memory_gib: f64,
    /// May run on spot capacity.
    #[serde(default)]
    pub spot: bool,
    /// Directory the job checkpoints to (kept across attempts); default: one per job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<String>,
    /// Attempts after the first one that fail (exit code, exec error, lost).
    #[serde(default)]
    pub max_retries: u32,
    /// Stop the attempt after this long, e.g. `90s`, `2h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime: Option<String>,
    /// Stop the attempt after it has been idle this long, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Benchmarks only: how long each attempt holds its resources on a server started with
    /// `--executor simulated` (which starts no process), e.g. `200ms`. Rejected by a server
    /// that runs real processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated_runtime: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Priority within the queue (default: the queue's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Environment variables for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn default_class() -> WorkloadClass {
    WorkloadClass::BatchInference
}
fn default_nodes() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
}
fn default_cpus() -> f64 {
    1.0
}
fn default_memory() -> f64 {
    1.0
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    /// Held until a maintainer other than the submitter approves it (its estimate crossed an
    /// approval threshold); then it waits in its queue like any pending job.
    PendingApproval,
    Admitted,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::PendingApproval => "pending_approval",
            JobState::Admitted => "admitted",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Lost => "lost",
        }
    }

    /// No further attempts will run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Lost
        )
    }

    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Pending,
            JobState::PendingApproval,
            JobState::Admitted,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
            JobState::Lost,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One run of the job's command. Fields are declared in the order of their JSON names, so a
/// status encodes canonically (keys sorted) as it is, without a detour through a JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// `code 0`, `signal 15`, `exec error: …`, `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Accelerator indices on the node (with the share in thousandths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// 1, 2, …
    pub n: u32,
    pub node: String,
    /// Every pod of a gang job (more than one node), by rank; `node` and `gpus` are rank 0's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<AttemptPod>,
    pub pool: String,
    /// completed, failed, cancel, timeout, idle, preempted, interrupted, exec_error, lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at: String,
}

/// Where one pod of a gang attempt ran (fields in the order of their JSON names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptPod {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    pub node: String,
    pub rank: u32,
}

/// What the server knows about a job's progress. Fields are declared in the order of their
/// JSON names (see [`Attempt`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<String>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// A cancel was asked for while an attempt ran.
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it ended as it did (or why the latest attempt failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub state: JobState,
    pub submitted_at: String,
    pub submitted_by: String,
    /// Milliseconds since the Unix epoch at submit; the queue order survives restarts.
    pub submitted_ms: i64,
    /// Why it waits: the policy, the pool and the quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_reason: Option<String>,
}

/// The stored form of a job (the `spec` of its `Job` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub status: JobStatus,
}

/// `POST /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitJobRequest {
    /// Name of the job; generated from the command when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub spec: JobSpec,
}

/// `POST /api/v1/jobs:batch`: jobs submitted together, stored in one transaction (all or
/// none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitJobsRequest {
    pub jobs: Vec<SubmitJobRequest>,
}

/// A job as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub name: String,
    pub spec: JobSpec,
    pub status: JobStatus,
    pub generation: i64,
}

/// Parses a duration such as `500ms`, `90s`, `15m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 15m or 2h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use ms, s, m, h or d"
            ));
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86400.0 {
        return Err(format!("{s:?} must be more than 0 and at most 365d"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_are_named() {
        assert_eq!(parse_duration("2s"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(
            parse_duration("15m"),
            Ok(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert!(parse_duration("5x").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn spec_defaults_and_unknown_fields() {
        let s: JobSpec = serde_json::from_value(serde_json::json!({
            "command": ["true"], "team": "a", "queue": "q"
        }))
        .expect("minimal spec parses");
        assert_eq!(s.cpus, 1.0);
        assert_eq!(s.class, WorkloadClass::BatchInference);
        let bad = serde_json::from_value::<JobSpec>(serde_json::json!({
            "command": ["true"], "team": "a", "queue": "q", "gpu": 1
        }));
        assert!(bad.is_err());
        assert_eq!(JobState::parse("running"), Some(JobState::Running));
        assert!(JobState::Lost.is_terminal());
    }
}
