//! Plinth's GPU scheduler: a pure crate (no I/O, no threads, no clock: every call that
//! depends on time takes `now` in milliseconds), so the server, the simulator and the
//! benchmarks run the very same code.
//!
//! # Model
//!
//! - **Pools and nodes.** A pool is a set of nodes with one accelerator type (or none: a CPU
//!   pool), one procurement (`on_demand`, `reserved`, `spot`), a region and labels. A pool is
//!   what Kueue calls a *ResourceFlavor*: quotas are held per pool. Nodes carry GPUs, CPU cores
//!   and memory; `remove_node` (spot interruption, drain) evicts the jobs that had a pod there.
//! - **Queues and cohorts.** A queue (Kueue: ClusterQueue) belongs to a team and holds, per pool,
//!   a nominal quota of GPUs (and optionally CPU cores) with a borrowing limit (how much beyond
//!   nominal it may take from its cohort; none = unlimited) and a lending limit (how much of its
//!   nominal it lends; none = all). Queues in one cohort share what they lend. A queue may use
//!   `nominal + borrowing limit` as long as the cohort's shared quota lasts. A queue without a
//!   cohort is limited to its nominal quota.
//! - **Jobs.** A job is `pods` identical pods (a gang, placed all at once or not at all), each
//!   asking for a share of one GPU (below 1, e.g. 0.5) or whole GPUs, CPU and memory; a class
//!   (training, fine_tuning, inference, batch_inference, rag), a priority (default: the queue's),
//!   an optional GPU type, spot tolerance, a checkpoint flag, label constraints (`region` and
//!   pool labels such as `residency`) and an optional expected runtime.
//! - **Class defaults** (`default_policy`, overridable per queue and per pool,
//!   the pool winning): inference never on spot; training and fine-tuning on spot only with a
//!   checkpoint directory; batch inference anywhere; rag on CPU pools only.
//! - **Submit** rejects what no pool could ever run (unknown GPU type, a pod larger than any
//!   node, a gang larger than the pool, no pool that the class, type and labels allow), naming
//!   every pool and why. Anything else waits with a reason (`why`).
//!
//! # Admission order
//!
//! Inside a queue: priority, then submit time (FIFO). With aging (`aging_ms_per_level`) a
//! waiting job gains one priority level per interval; the ordering key `priority × interval −
//! submit_time` does not depend on `now`, so aging needs no re-sorting. A requeued job keeps its
//! submit time. Across queues: the heads of all queues sit in one ordered set; heads that fit
//! within their queue's nominal quota go before heads that would borrow (as in Kueue), borrowing
//! heads are ordered by their queue's dominant-resource share after admission (with fair
//! sharing), then by the head's key. One admission attempt costs O(log n). A queue whose head cannot run sleeps until something it
//! waits for changes (its quota, its cohort, its pool, a hook's verdict), so blocked queues are
//! not rescanned on every call.
//!
//! For each job the queue's pools are tried in order (like Kueue's flavors): the quota must fit,
//! then the gang must be placed (best fit: whole GPUs on the node with the fewest free GPUs,
//! fractional shares on the fullest partly used GPU), then every [`AdmissionHook`] must agree.
//!
//! # Preemption and reclaim
//!
//! When a job does not fit, victims are looked for in this order: jobs of other queues in the
//! cohort that currently borrow on that pool (reclaim; only when the job stays within its own
//! nominal quota, and per `reclaim_within_cohort`: `any` priority or `lower_priority` only),
//! then lower-priority jobs of its own queue (`within_queue: lower_priority`; never equal or
//! higher). Lowest priority and most recently admitted go first, and victims that turn out not
//! to be needed are kept. Victims are released at once and reported as
//! [`Decision::Preempted`]; the executor stops them and calls `requeue`.
//!
//! # Fair sharing
//!
//! A queue's dominant-resource share is the largest, over GPUs and CPU, of what it borrows
//! beyond nominal divided by what its cohort can lend. Heads of queues with a lower share go
//! first; queues within their nominal quota have share 0 and compete by priority and FIFO.
//!
//! # Backfill
//!
//! A job that cannot start makes a reservation on the pool (capacity) or the cohort's quota of
//! that pool: its shadow time is when enough running jobs are expected to end. Jobs behind it
//! may start ahead of it only if they are expected to end before the shadow time or fit in what
//! the reserved job leaves over. Up to `backfill_depth` jobs behind a blocked head of a queue are
//! tried per pass. Jobs without an expected runtime cannot be proven harmless and only use the
//! left-over part. Reservations live for one pass; their holders are retried on the next.
//!
//! # Differences from Kueue
//!
//! Pools play the part of ResourceFlavors; the preemptor is admitted in the same decision as
//! its victims are preempted (the executor stops victims first); quotas cover GPUs and CPU cores
//! (memory is checked on nodes only); backfill reservations and aging have no Kueue equivalent.

mod placement;
mod scheduler;
mod types;

pub use scheduler::Scheduler;
pub use types::{
    AdmissionHook, AdmissionRequest, ClassPolicy, ConfigError, Decision, JobError, JobId, JobSpec,
    JobState, JobStatus, Milli, NodeSpec, PodPlacement, PoolSpec, PoolUsage, PreemptionKind,
    Procurement, QueueSpec, QuotaSpec, ReclaimPolicy, Rejected, ResourceQuota, SchedulerConfig,
    SpotRule, Time, WaitKind, WaitReason, WithinQueuePreemption, WorkloadClass, default_policy,
};
