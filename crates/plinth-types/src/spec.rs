//! Typed `spec` sections of the built-in kinds (Pool, Team, Queue). Unknown fields are errors.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a pool's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolBackend {
    #[default]
    Local,
    Slurm,
    Kubernetes,
}

/// How the pool's nodes are bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Procurement {
    #[default]
    OnDemand,
    Reserved,
    Spot,
}

/// The kinds of AI work a platform schedules differently.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadClass {
    Training,
    FineTuning,
    Inference,
    BatchInference,
    Rag,
}

impl WorkloadClass {
    pub const ALL: [WorkloadClass; 5] = [
        WorkloadClass::Training,
        WorkloadClass::FineTuning,
        WorkloadClass::Inference,
        WorkloadClass::BatchInference,
        WorkloadClass::Rag,
    ];

    /// The name as written in documents (`fine_tuning`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadClass::Training => "training",
            WorkloadClass::FineTuning => "fine_tuning",
            WorkloadClass::Inference => "inference",
            WorkloadClass::BatchInference => "batch_inference",
            WorkloadClass::Rag => "rag",
        }
    }
}

/// Accelerators on each node of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceleratorSpec {
    /// e.g. `nvidia-h100-80gb`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Accelerators per node (at least 1).
    pub count: u32,
    /// Memory per accelerator, GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<u32>,
}

/// `kind: Pool`: a group of identical nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default)]
    pub backend: PoolBackend,
    /// Number of nodes (at least 1).
    pub nodes: u32,
    /// Absent for a CPU pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<AcceleratorSpec>,
    /// CPU cores per node.
    pub cpus_per_node: u32,
    /// Memory per node, GiB.
    pub memory_gib_per_node: u32,
    #[serde(default)]
    pub procurement: Procurement,
    /// Price of one accelerator for one hour (GPU pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<f64>,
    /// Price of one node for one hour (CPU pools, or on top of GPU prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_node_hour: Option<f64>,
    /// ISO 4217 code, default USD.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// When the pool's capacity started to be paid for (RFC 3339); idle cost is counted from
    /// then on. Default: when the Pool was created. Set it earlier to import older usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priced_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Classes this pool accepts; empty means every class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_classes: Vec<WorkloadClass>,
}

fn default_currency() -> String {
    "USD".to_string()
}

/// `kind: Team`: a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// People to contact (e-mail addresses or handles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
}

/// A queue's share of one pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaSpec {
    /// Name of a Pool.
    pub pool: String,
    /// Nominal accelerators (may be fractional, e.g. 0.5).
    #[serde(default)]
    pub gpus: f64,
    /// Nominal CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// How many accelerators beyond nominal it may borrow from its cohort (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowing_limit: Option<f64>,
    /// How many of its nominal accelerators it may lend to its cohort (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lending_limit: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithinQueuePreemption {
    #[default]
    LowerPriority,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReclaimPolicy {
    Any,
    LowerPriority,
    #[default]
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreemptionSpec {
    #[serde(default)]
    pub within_queue: WithinQueuePreemption,
    #[serde(default)]
    pub reclaim_within_cohort: ReclaimPolicy,
}

/// `kind: Queue`: where a team's work waits for capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    /// Name of the owning Team.
    pub team: String,
    /// Queues in one cohort lend and borrow unused quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// Higher runs first; -1000..=1000.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub quotas: Vec<QuotaSpec>,
    #[serde(default)]
    pub preemption: PreemptionSpec,
    /// Classes this queue accepts; empty means every class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_classes: Vec<WorkloadClass>,
}
