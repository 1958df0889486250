//! Specs, ids, decisions and reasons: the vocabulary of the scheduler.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds on the caller's clock. The scheduler never reads a clock itself.
pub type Time = u64;

/// One thousandth of a GPU (or of a CPU core): fractional requests are exact integers.
pub type Milli = u64;

/// Identifies a submitted job. Ids grow with submission order, so they double as the FIFO tie-break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// How a pool's nodes are bought, and the kinds of AI work: the same types as the `Pool` and
/// `Queue` resources.
pub use plinth_types::spec::{Procurement, WorkloadClass};

/// Built-in class defaults: inference never on spot, training and fine-tuning on spot only
/// with a checkpoint directory, batch inference anywhere, rag on CPU pools.
pub fn default_policy(class: WorkloadClass) -> ClassPolicy {
    match class {
        WorkloadClass::Training | WorkloadClass::FineTuning => ClassPolicy {
            spot: SpotRule::WithCheckpoint,
            cpu_pools_only: false,
        },
        WorkloadClass::Inference => ClassPolicy {
            spot: SpotRule::Never,
            cpu_pools_only: false,
        },
        WorkloadClass::BatchInference => ClassPolicy {
            spot: SpotRule::Allowed,
            cpu_pools_only: false,
        },
        WorkloadClass::Rag => ClassPolicy {
            spot: SpotRule::Allowed,
            cpu_pools_only: true,
        },
    }
}

/// Whether a class may run on spot capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpotRule {
    Never,
    /// Only jobs that declare a checkpoint directory (they resume after an interruption).
    WithCheckpoint,
    Allowed,
}

/// Per-class placement rules; a Queue or a Pool can override the built-in defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassPolicy {
    pub spot: SpotRule,
    /// Only pools without accelerators.
    pub cpu_pools_only: bool,
}

/// A pool: identical nodes with one accelerator type and one procurement. A pool is what Kueue
/// calls a ResourceFlavor: queues hold quota per pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub name: String,
    /// Accelerator type such as `nvidia-h100-80gb`; `None` for a CPU pool.
    pub accelerator: Option<String>,
    #[serde(default)]
    pub procurement: Procurement,
    #[serde(default)]
    pub region: Option<String>,
    /// Other labels (for example `residency: eu`) matched by job constraints.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Classes this pool accepts; empty means every class.
    #[serde(default)]
    pub workload_classes: Vec<WorkloadClass>,
    /// Overrides of the class defaults on this pool (win over queue overrides).
    #[serde(default)]
    pub class_policies: BTreeMap<WorkloadClass, ClassPolicy>,
}

impl PoolSpec {
    pub fn gpu(name: &str, accelerator: &str, procurement: Procurement) -> Self {
        PoolSpec {
            name: name.to_string(),
            accelerator: Some(accelerator.to_string()),
            procurement,
            region: None,
            labels: BTreeMap::new(),
            workload_classes: Vec::new(),
            class_policies: BTreeMap::new(),
        }
    }

    pub fn cpu(name: &str) -> Self {
        PoolSpec {
            accelerator: None,
            ..PoolSpec::gpu(name, "", Procurement::OnDemand)
        }
    }
}

/// One node of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub gpus: u32,
    pub cpus: u32,
    pub memory_mib: u64,
}

impl NodeSpec {
    pub fn new(name: &str, gpus: u32, cpus: u32, memory_mib: u64) -> Self {
        NodeSpec {
            name: name.to_string(),
            gpus,
            cpus,
            memory_mib,
        }
    }
}

/// Quota of one resource in one pool (Kueue: nominalQuota, borrowingLimit, lendingLimit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceQuota {
    pub nominal: f64,
    /// How much beyond nominal the queue may borrow from its cohort; `None`: no limit.
    #[serde(default)]
    pub borrowing_limit: Option<f64>,
    /// How much of its nominal the queue lends to its cohort; `None`: all of it.
    #[serde(default)]
    pub lending_limit: Option<f64>,
}

impl ResourceQuota {
    pub fn nominal(n: f64) -> Self {
        ResourceQuota {
            nominal: n,
            borrowing_limit: None,
            lending_limit: None,
        }
    }
}

/// A queue's quota in one pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaSpec {
    pub pool: String,
    pub gpus: ResourceQuota,
    /// CPU cores; `None`: CPU is not limited by quota (only by the nodes).
    #[serde(default)]
    pub cpus: Option<ResourceQuota>,
}

impl QuotaSpec {
    pub fn gpus(pool: &str, nominal: f64) -> Self {
        QuotaSpec {
            pool: pool.to_string(),
            gpus: ResourceQuota::nominal(nominal),
            cpus: None,
        }
    }
}

/// Preemption inside one queue (Kueue: `withinClusterQueue`) and reclaim of lent quota inside a
/// cohort (Kueue: `reclaimWithinCohort`): the same types as the `Queue` resource.
pub use plinth_types::spec::{ReclaimPolicy, WithinQueuePreemption};

/// A queue (Kueue: ClusterQueue): a team's quota per pool, a cohort, preemption rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub name: String,
    pub team: String,
    #[serde(default)]
    pub cohort: Option<String>,
    /// Default priority of the queue's jobs.
    #[serde(default)]
    pub priority: i32,
    /// In order of preference (the first pool that fits wins, as Kueue tries flavors in order).
    pub quotas: Vec<QuotaSpec>,
    #[serde(default)]
    pub within_queue: WithinQueuePreemption,
    #[serde(default)]
    pub reclaim_within_cohort: ReclaimPolicy,
    /// Classes the queue accepts; empty means every class.
    #[serde(default)]
    pub workload_classes: Vec<WorkloadClass>,
    #[serde(default)]
    pub class_policies: BTreeMap<WorkloadClass, ClassPolicy>,
}

impl QueueSpec {
    pub fn new(name: &str, team: &str, cohort: Option<&str>, quotas: Vec<QuotaSpec>) -> Self {
        QueueSpec {
            name: name.to_string(),
            team: team.to_string(),
            cohort: cohort.map(str::to_string),
            priority: 0,
            quotas,
            within_queue: WithinQueuePreemption::LowerPriority,
            reclaim_within_cohort: ReclaimPolicy::Never,
            workload_classes: Vec::new(),
            class_policies: BTreeMap::new(),
        }
    }
}

/// What a job asks for. A gang is `pods` identical pods that are placed all at once or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub queue: String,
    pub class: WorkloadClass,
    /// `None`: the queue's priority.
    #[serde(default)]
    pub priority: Option<i32>,
    pub pods: u32,
    /// Per pod: below 1 is a share of one GPU (e.g. 0.5); otherwise a whole number.
    pub gpus_per_pod: f64,
    pub cpus_per_pod: f64,
    pub memory_mib_per_pod: u64,
    /// Required accelerator type.
    #[serde(default)]
    pub gpu_type: Option<String>,
    /// The job tolerates spot interruption (the class rules still apply).
    #[serde(default)]
    pub spot_tolerant: bool,
    /// The job writes checkpoints and resumes from them.
    #[serde(default)]
    pub checkpoint_dir: bool,
    /// Placement constraints: `region` matches the pool's region, other keys its labels.
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    /// Expected runtime; lets reservations (backfill) know when resources come back.
    #[serde(default)]
    pub expected_runtime_ms: Option<u64>,
}

impl JobSpec {
    pub fn new(queue: &str, class: WorkloadClass, pods: u32, gpus_per_pod: f64) -> Self {
        JobSpec {
            queue: queue.to_string(),
            class,
            priority: None,
            pods,
            gpus_per_pod,
            cpus_per_pod: 1.0,
            memory_mib_per_pod: 1024,
            gpu_type: None,
            spot_tolerant: false,
            checkpoint_dir: false,
            constraints: BTreeMap::new(),
            expected_runtime_ms: None,
        }
    }
}

/// Where one pod runs: a node and, per GPU index, the share of it (1000 = the whole GPU).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlacement {
    pub node: String,
    pub gpus: Vec<(u32, u32)>,
}

/// Why a running job was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreemptionKind {
    /// A higher-priority job of the same queue needed the quota.
    WithinQueue,
    /// The owner of lent quota took it back.
    ReclaimWithinCohort,
    /// Its node went away (spot interruption, drain).
    NodeLost,
}

/// What `schedule` decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Decision {
    Admitted {
        job: JobId,
        queue: String,
        pool: String,
        placement: Vec<PodPlacement>,
        /// Part of the GPUs came from the cohort beyond the queue's nominal quota.
        borrowing: bool,
    },
    /// The job's resources are taken back; the executor must stop it, then call `requeue`.
    Preempted {
        job: JobId,
        by: JobId,
        kind: PreemptionKind,
        reason: String,
    },
}

/// The policy that keeps a job waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    /// Submitted, not yet looked at by `schedule`.
    NotConsidered,
    /// Queue's nominal quota (no cohort) or nominal + borrowing limit exhausted.
    QueueQuota,
    /// The cohort has no unused quota left to lend.
    CohortQuota,
    /// Quota fits but no set of nodes can hold the pods now.
    Capacity,
    /// An admission hook said no.
    Vetoed,
    /// Starting it would delay the reservation of a blocked job ahead of it.
    Reservation,
    /// A job ahead of it in the same queue is waiting.
    BehindHead,
    /// Preempted or interrupted; waits for `requeue`.
    Evicted,
}

/// Why a job waits: the policy, the pool and the quota involved, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitReason {
    pub kind: WaitKind,
    pub pool: Option<String>,
    pub message: String,
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Lifecycle of a job in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Admitted,
    /// Preempted or interrupted: resources released, waiting for `requeue`.
    Evicted,
    Finished,
    Cancelled,
}

/// What `status` shows for a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub queue: String,
    pub state: JobState,
    /// How many times it has been admitted.
    pub attempts: u32,
    pub submitted_at: Time,
    pub admitted_at: Option<Time>,
    pub pool: Option<String>,
    pub placement: Vec<PodPlacement>,
    /// Set while pending or evicted.
    pub wait: Option<WaitReason>,
}

/// Usage of one queue in one pool, in GPUs and CPU cores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub pool: String,
    pub gpus_used: f64,
    /// Beyond the nominal quota (taken from the cohort).
    pub gpus_borrowed: f64,
    /// Lendable nominal quota of this queue currently used by the cohort (the cohort's borrowing
    /// is attributed to lenders in proportion to what each leaves unused).
    pub gpus_lent: f64,
    pub cpus_used: f64,
}

/// What a hook sees of a job about to be admitted.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    pub job: JobId,
    pub spec: &'a JobSpec,
    pub team: &'a str,
    pub pool: &'a PoolSpec,
    pub now: Time,
}

/// A later policy or budget check that may veto an admission with a reason. A veto makes the
/// scheduler try the job's next pool; if every pool is vetoed the job waits with the reason.
pub trait AdmissionHook: Send {
    fn name(&self) -> &str;
    fn check(&self, request: &AdmissionRequest<'_>) -> Result<(), String>;
}

/// Configuration errors (pools, nodes, queues).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown pool `{0}`")]
    UnknownPool(String),
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    #[error("unknown node `{node}` in pool `{pool}`")]
    UnknownNode { pool: String, node: String },
    #[error("{kind} `{name}` already exists")]
    Duplicate { kind: &'static str, name: String },
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
}

/// A submit the scheduler refuses: no pool could ever run it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rejected: {reason}")]
pub struct Rejected {
    pub reason: String,
}

/// Errors of job operations (`finish`, `cancel`, `requeue`, `status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    #[error("{job} is {state:?}; {op} needs {expected}")]
    WrongState {
        job: JobId,
        state: JobState,
        op: &'static str,
        expected: &'static str,
    },
}

/// Scheduler-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// A waiting job gains one priority level per this many milliseconds (`None`: no aging).
    pub aging_ms_per_level: Option<u64>,
    /// Order a cohort's queues by dominant-resource share (Kueue fair sharing).
    pub fair_sharing: bool,
    /// Best-effort backfill: how many jobs behind a blocked head of one queue are tried per pass.
    pub backfill_depth: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            aging_ms_per_level: Some(60_000),
            fair_sharing: true,
            backfill_depth: 8,
        }
    }
}

/// Fractional units (GPUs, cores) to exact milli units.
pub(crate) fn to_milli(what: &str, value: f64) -> Result<Milli, String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{what} must be a finite number >= 0, got {value}"));
    }
    let m = (value * 1000.0).round();
    if m > 1e15 {
        return Err(format!("{what} is too large: {value}"));
    }
    Ok(m as Milli)
}

pub(crate) fn from_milli(m: Milli) -> f64 {
    m as f64 / 1000.0
}
