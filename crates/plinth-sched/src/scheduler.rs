//! The scheduler: state, admission loop, preemption, reservations.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;

use crate::placement::{Alloc, Nodes, Pod};
use crate::types::*;

const GPU: usize = 0;
const CPU: usize = 1;
const RES_NAMES: [&str; 2] = ["GPUs", "CPU cores"];
/// Aging step when aging is off: longer than any schedule will run, so priority always wins.
const NO_AGING_MS: i128 = 1 << 42;

#[derive(Debug)]
struct Pool {
    spec: PoolSpec,
    nodes: Nodes,
    /// Expected ends of running jobs with a known runtime: (end, job) -> GPUs.
    ends: BTreeMap<(Time, JobId), Milli>,
}

#[derive(Debug, Clone)]
struct QuotaState {
    pool: usize,
    nominal: [Milli; 2],
    borrow: [Option<Milli>; 2],
    lendable: [Milli; 2],
    limited: [bool; 2],
    used: [Milli; 2],
}

impl QuotaState {
    fn guaranteed(&self, r: usize) -> Milli {
        self.nominal[r] - self.lendable[r]
    }
    fn above(&self, r: usize) -> Milli {
        self.used[r].saturating_sub(self.guaranteed(r))
    }
}

#[derive(Debug, Default)]
struct CohortPool {
    lendable: [Milli; 2],
    above: [Milli; 2],
    ends: BTreeMap<(Time, JobId), Milli>,
}

#[derive(Debug)]
struct Cohort {
    name: String,
    /// A queue without a cohort gets a cohort of its own, which makes "nominal only" fall out of
    /// the same arithmetic.
    implicit: bool,
    members: Vec<usize>,
    pools: HashMap<usize, CohortPool>,
}

/// A running job in eviction order: (priority, newest admission first, id).
type RunKey = (i32, Reverse<u64>, JobId);

/// Chosen victims and the preemptor's booked pods.
type Victims = (Vec<(JobId, PreemptionKind)>, Vec<Alloc>);

/// (head would borrow, dominant-resource share after admitting it, order key, head, queue).
type HeadKey = (bool, u64, Reverse<i128>, JobId, usize);

#[derive(Debug)]
struct Queue {
    spec: QueueSpec,
    cohort: usize,
    quotas: Vec<QuotaState>,
    pending: BTreeSet<(Reverse<i128>, JobId)>,
    /// Admitted jobs: (priority, newest admission first, id).
    running: BTreeSet<RunKey>,
    active: Option<HeadKey>,
    parked: bool,
    epoch: u64,
    tried: u32,
    wake_acc: Vec<Wake>,
    /// First job of this pass that failed on quota alone.
    floor: Option<(JobId, bool)>,
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    queue: usize,
    prio: i32,
    key: i128,
    submitted: Time,
    state: JobState,
    attempts: u32,
    quota: Option<usize>,
    allocs: Vec<Alloc>,
    admitted_at: Option<Time>,
    admit_seq: u64,
    end: Option<Time>,
    req: [Milli; 2],
    pod: Pod,
    eligible: Vec<usize>,
    wait: Option<WaitReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Wake {
    Queue(usize),
    Cohort(usize),
    Pool(usize),
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Pool(usize),
    Cohort(usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    head: JobId,
    shadow: Time,
    extra: Milli,
}

#[derive(Debug, Clone)]
struct Block {
    reason: WaitReason,
    wake: Vec<Wake>,
    /// Where a reservation can be made for this block.
    scope: Option<(Scope, Milli)>,
    preemptible: bool,
    /// Every pool the job tried refused it on quota (set by `try_admit`).
    quota_only: bool,
    /// Every refusal was quota, capacity or a reservation: a job of the same shape that asks for
    /// no less cannot pass either.
    monotone: bool,
}

/// The scheduler. See the crate documentation for the model.
pub struct Scheduler {
    config: SchedulerConfig,
    pools: Vec<Pool>,
    pool_by_name: HashMap<String, usize>,
    queues: Vec<Queue>,
    queue_by_name: HashMap<String, usize>,
    cohorts: Vec<Cohort>,
    cohort_by_name: HashMap<String, usize>,
    jobs: Vec<Job>,
    active: BTreeSet<HeadKey>,
    wakes: HashMap<Wake, Vec<(usize, u64)>>,
    reservations: HashMap<Scope, Reservation>,
    reserved_by: HashMap<JobId, Vec<Scope>>,
    in_pass: bool,
    deferred: Vec<Wake>,
    hooks: Vec<Box<dyn AdmissionHook>>,
    admit_seq: u64,
    decisions_total: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            pools: Vec::new(),
            pool_by_name: HashMap::new(),
            queues: Vec::new(),
            queue_by_name: HashMap::new(),
            cohorts: Vec::new(),
            cohort_by_name: HashMap::new(),
            jobs: Vec::new(),
            active: BTreeSet::new(),
            wakes: HashMap::new(),
            reservations: HashMap::new(),
            reserved_by: HashMap::new(),
            in_pass: false,
            deferred: Vec::new(),
            hooks: Vec::new(),
            admit_seq: 0,
            decisions_total: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Admission attempts made so far (admitted or not), for benchmarks.
    pub fn decisions_total(&self) -> u64 {
        self.decisions_total
    }

    pub fn add_hook(&mut self, hook: Box<dyn AdmissionHook>) {
        self.hooks.push(hook);
        self.wake_all();
    }

    // ----------------------------------------------------------------------------------------
    // Pools and nodes

    pub fn add_pool(&mut self, spec: PoolSpec) -> Result<(), ConfigError> {
        if spec.name.is_empty() {
            return Err(invalid("pool name", "must not be empty"));
        }
        if self.pool_by_name.contains_key(&spec.name) {
            return Err(ConfigError::Duplicate {
                kind: "pool",
                name: spec.name,
            });
        }
        if spec.accelerator.as_deref() == Some("") {
            return Err(invalid(
                &format!("pool `{}` accelerator", spec.name),
                "must not be empty (use None for a CPU pool)",
            ));
        }
        self.pool_by_name
            .insert(spec.name.clone(), self.pools.len());
        self.pools.push(Pool {
            spec,
            nodes: Nodes::default(),
            ends: BTreeMap::new(),
        });
        Ok(())
    }

    /// Changes a pool's accelerator type, procurement, region, labels or class rules while it
    /// runs (its nodes change through `add_node`/`remove_node`; a GPU pool stays a GPU pool).
    /// Jobs running on it that the new spec no longer admits lose their pods and become
    /// `Evicted` (returned, for the caller to stop and `requeue`); waiting jobs are matched
    /// against the new spec.
    pub fn update_pool(&mut self, spec: PoolSpec) -> Result<Vec<JobId>, ConfigError> {
        let p = self.pool_index(&spec.name)?;
        if spec.accelerator.as_deref() == Some("") {
            return Err(invalid(
                &format!("pool `{}` accelerator", spec.name),
                "must not be empty (use None for a CPU pool)",
            ));
        }
        if spec.accelerator.is_some() != self.pools[p].spec.accelerator.is_some()
            && self.pools[p].nodes.nodes.iter().any(|n| n.alive)
        {
            return Err(invalid(
                &format!("pool `{}`", spec.name),
                "cannot change between a GPU and a CPU pool while it has nodes (remove them first)",
            ));
        }
        self.pools[p].spec = spec;
        let running: BTreeSet<JobId> = self.pools[p]
            .nodes
            .nodes
            .iter()
            .flat_map(|n| n.jobs.iter().copied())
            .collect();
        let mut victims = Vec::new();
        for id in running {
            let j = id.0 as usize;
            let queue = &self.queues[self.jobs[j].queue];
            if let Err(why) = self.pool_suits(&self.jobs[j], queue, &self.pools[p].spec) {
                let name = self.pools[p].spec.name.clone();
                self.release(id);
                let job = &mut self.jobs[j];
                job.state = JobState::Evicted;
                job.wait = Some(WaitReason {
                    kind: WaitKind::Evicted,
                    pool: Some(name.clone()),
                    message: format!("pool `{name}` changed and {why}; waiting for requeue"),
                });
                victims.push(id);
            }
        }
        for j in 0..self.jobs.len() {
            let waiting = matches!(self.jobs[j].state, JobState::Pending | JobState::Evicted);
            let uses_pool = self.queues[self.jobs[j].queue]
                .quotas
                .iter()
                .any(|q| q.pool == p);
            if waiting && uses_pool {
                self.jobs[j].eligible = self.eligibility(j).0;
            }
        }
        self.wake_all();
        Ok(victims)
    }

    pub fn add_node(&mut self, pool: &str, node: NodeSpec) -> Result<(), ConfigError> {
        let p = self.pool_index(pool)?;
        if self.pools[p].nodes.find(&node.name).is_some() {
            return Err(ConfigError::Duplicate {
                kind: "node",
                name: node.name,
            });
        }
        let is_gpu_pool = self.pools[p].spec.accelerator.is_some();
        if is_gpu_pool != (node.gpus > 0) {
            return Err(invalid(
                &format!("node `{}` of pool `{pool}`", node.name),
                if is_gpu_pool {
                    "a GPU pool's nodes need at least one GPU"
                } else {
                    "a CPU pool's nodes have no GPUs"
                },
            ));
        }
        let cpu = Milli::from(node.cpus) * 1000;
        self.pools[p]
            .nodes
            .add(&node.name, node.gpus, cpu, node.memory_mib);
        self.fire(Wake::Pool(p));
        Ok(())
    }

    /// Takes a node away (spot interruption, drain). Jobs with a pod on it lose all their pods
    /// and become `Evicted`; they are returned so the caller can stop and `requeue` them.
    pub fn remove_node(&mut self, pool: &str, node: &str) -> Result<Vec<JobId>, ConfigError> {
        let p = self.pool_index(pool)?;
        let Some(n) = self.pools[p].nodes.find(node) else {
            return Err(ConfigError::UnknownNode {
                pool: pool.to_string(),
                node: node.to_string(),
            });
        };
        let victims: Vec<JobId> = self.pools[p].nodes.nodes[n].jobs.iter().copied().collect();
        for v in &victims {
            self.release(*v);
            let job = &mut self.jobs[v.0 as usize];
            job.state = JobState::Evicted;
            job.wait = Some(WaitReason {
                kind: WaitKind::Evicted,
                pool: Some(pool.to_string()),
                message: format!("node `{node}` of pool `{pool}` went away; waiting for requeue"),
            });
        }
        self.pools[p].nodes.retire(n);
        Ok(victims)
    }

    // ----------------------------------------------------------------------------------------
    // Queues

    pub fn add_queue(&mut self, spec: QueueSpec) -> Result<(), ConfigError> {
        if self.queue_by_name.contains_key(&spec.name) {
            return Err(ConfigError::Duplicate {
                kind: "queue",
                name: spec.name,
            });
        }
        let quotas = self.build_quotas(&spec)?;
        let q = self.queues.len();
        let cohort = self.cohort_for(&spec, q);
        self.queues.push(Queue {
            spec,
            cohort,
            quotas,
            pending: BTreeSet::new(),
            running: BTreeSet::new(),
            active: None,
            parked: false,
            epoch: 0,
            tried: 0,
            wake_acc: Vec::new(),
            floor: None,
        });
        self.queue_by_name
            .insert(self.queues[q].spec.name.clone(), q);
        self.join_cohort(q);
        Ok(())
    }

    /// Changes a queue's quotas, cohort or policies. Pools the queue has jobs running on must
    /// stay in its quotas.
    pub fn update_queue(&mut self, spec: QueueSpec) -> Result<(), ConfigError> {
        let q = self.queue_index(&spec.name)?;
        let mut quotas = self.build_quotas(&spec)?;
        for old in &self.queues[q].quotas {
            if old.used != [0, 0] {
                match quotas.iter_mut().find(|n| n.pool == old.pool) {
                    Some(n) => n.used = old.used,
                    None => {
                        return Err(invalid(
                            &format!("queue `{}`", spec.name),
                            &format!(
                                "jobs still run on pool `{}`; it must stay in the quotas until they end",
                                self.pools[old.pool].spec.name
                            ),
                        ));
                    }
                }
            }
        }
        // Running jobs point at quota indices: remap them.
        let running: Vec<JobId> = self.queues[q].running.iter().map(|r| r.2).collect();
        for id in &running {
            let job = &self.jobs[id.0 as usize];
            let pool = job.quota.map(|qi| self.queues[q].quotas[qi].pool);
            let new_qi = pool.and_then(|p| quotas.iter().position(|n| n.pool == p));
            self.jobs[id.0 as usize].quota = new_qi;
        }
        self.leave_cohort(q);
        let cohort = self.cohort_for(&spec, q);
        {
            let queue = &mut self.queues[q];
            queue.spec = spec;
            queue.quotas = quotas;
            queue.cohort = cohort;
        }
        self.join_cohort(q);
        let pending: Vec<JobId> = self.queues[q].pending.iter().map(|k| k.1).collect();
        for id in pending {
            let eligible = self.eligibility(id.0 as usize).0;
            self.jobs[id.0 as usize].eligible = eligible;
        }
        self.wake_all();
        Ok(())
    }

    fn build_quotas(&self, spec: &QueueSpec) -> Result<Vec<QuotaState>, ConfigError> {
        let mut out: Vec<QuotaState> = Vec::new();
        for quota in &spec.quotas {
            let pool = self.pool_index(&quota.pool)?;
            if out.iter().any(|o| o.pool == pool) {
                return Err(invalid(
                    &format!("queue `{}`", spec.name),
                    &format!("pool `{}` appears twice in quotas", quota.pool),
                ));
            }
            let what = format!("queue `{}` quota on pool `{}`", spec.name, quota.pool);
            let mut st = QuotaState {
                pool,
                nominal: [0, 0],
                borrow: [None, None],
                lendable: [0, 0],
                limited: [true, quota.cpus.is_some()],
                used: [0, 0],
            };
            for (r, rq) in [(GPU, Some(quota.gpus)), (CPU, quota.cpus)] {
                let Some(rq) = rq else { continue };
                let name = RES_NAMES[r];
                let field = |label: &str, v: f64| {
                    to_milli(&format!("{name} {label}"), v).map_err(|e| invalid(&what, &e))
                };
                let n = field("nominal quota", rq.nominal)?;
                let b = rq
                    .borrowing_limit
                    .map(|b| field("borrowing limit", b))
                    .transpose()?;
                let l = rq
                    .lending_limit
                    .map(|l| field("lending limit", l))
                    .transpose()?;
                st.nominal[r] = n;
                st.borrow[r] = b;
                st.lendable[r] = l.map_or(n, |l| l.min(n));
            }
            out.push(st);
        }
        Ok(out)
    }

    fn cohort_for(&mut self, spec: &QueueSpec, q: usize) -> usize {
        let (name, implicit) = match &spec.cohort {
            Some(c) => (c.clone(), false),
            None => (format!("\u{0}queue:{q}"), true),
        };
        if let Some(c) = self.cohort_by_name.get(&name) {
            return *c;
        }
        let c = self.cohorts.len();
        self.cohorts.push(Cohort {
            name: name.clone(),
            implicit,
            members: Vec::new(),
            pools: HashMap::new(),
        });
        self.cohort_by_name.insert(name, c);
        c
    }

    fn join_cohort(&mut self, q: usize) {
        let c = self.queues[q].cohort;
        self.cohorts[c].members.push(q);
        for qs in &self.queues[q].quotas {
            let cp = self.cohorts[c].pools.entry(qs.pool).or_default();
            for r in [GPU, CPU] {
                if qs.limited[r] {
                    cp.lendable[r] += qs.lendable[r];
                    cp.above[r] += qs.above(r);
                }
            }
        }
        // Running jobs' expected ends move with the queue.
        for (_, _, id) in &self.queues[q].running {
            let job = &self.jobs[id.0 as usize];
            if let (Some(end), Some(qi)) = (job.end, job.quota) {
                let p = self.queues[q].quotas[qi].pool;
                if let Some(cp) = self.cohorts[c].pools.get_mut(&p) {
                    cp.ends.insert((end, *id), job.req[GPU]);
                }
            }
        }
    }

    fn leave_cohort(&mut self, q: usize) {
        let c = self.queues[q].cohort;
        self.cohorts[c].members.retain(|m| *m != q);
        for qs in &self.queues[q].quotas {
            if let Some(cp) = self.cohorts[c].pools.get_mut(&qs.pool) {
                for r in [GPU, CPU] {
                    if qs.limited[r] {
                        cp.lendable[r] -= qs.lendable[r];
                        cp.above[r] -= qs.above(r);
                    }
                }
            }
        }
        for (_, _, id) in &self.queues[q].running {
            let job = &self.jobs[id.0 as usize];
            if let Some(end) = job.end {
                for cp in self.cohorts[c].pools.values_mut() {
                    cp.ends.remove(&(end, *id));
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Jobs

    /// Accepts a job, or rejects it when no pool of its queue could ever run it.
    pub fn submit(&mut self, spec: JobSpec, now: Time) -> Result<JobId, Rejected> {
        let reject = |reason: String| Rejected { reason };
        let q = self
            .queue_by_name
            .get(&spec.queue)
            .copied()
            .ok_or_else(|| reject(format!("unknown queue `{}`", spec.queue)))?;
        if spec.pods == 0 {
            return Err(reject("pods must be at least 1".into()));
        }
        let gpu = to_milli("gpus_per_pod", spec.gpus_per_pod).map_err(reject)?;
        if gpu > 1000 && gpu % 1000 != 0 {
            return Err(reject(format!(
                "gpus_per_pod {} is neither a share of one GPU (below 1) nor a whole number",
                spec.gpus_per_pod
            )));
        }
        let cpu = to_milli("cpus_per_pod", spec.cpus_per_pod).map_err(reject)?;
        let queue = &self.queues[q];
        if !queue.spec.workload_classes.is_empty()
            && !queue.spec.workload_classes.contains(&spec.class)
        {
            return Err(reject(format!(
                "queue `{}` does not accept class {}",
                spec.queue,
                spec.class.as_str()
            )));
        }
        if let Some(t) = &spec.gpu_type
            && !self
                .pools
                .iter()
                .any(|p| p.spec.accelerator.as_deref() == Some(t.as_str()))
        {
            let mut known: Vec<&str> = self
                .pools
                .iter()
                .filter_map(|p| p.spec.accelerator.as_deref())
                .collect();
            known.sort_unstable();
            known.dedup();
            return Err(reject(format!(
                "unknown GPU type `{t}` (known: {})",
                known.join(", ")
            )));
        }
        let prio = spec.priority.unwrap_or(queue.spec.priority);
        let step = self
            .config
            .aging_ms_per_level
            .map_or(NO_AGING_MS, |a| i128::from(a.max(1)));
        let key = i128::from(prio) * step - i128::from(now);
        let id = JobId(self.jobs.len() as u64);
        let pods = Milli::from(spec.pods);
        self.jobs.push(Job {
            req: [gpu * pods, cpu * pods],
            pod: Pod {
                gpu,
                cpu,
                mem: spec.memory_mib_per_pod,
            },
            spec,
            queue: q,
            prio,
            key,
            submitted: now,
            state: JobState::Pending,
            attempts: 0,
            quota: None,
            allocs: Vec::new(),
            admitted_at: None,
            admit_seq: 0,
            end: None,
            eligible: Vec::new(),
            wait: None,
        });
        let (eligible, why_not) = self.eligibility(id.0 as usize);
        let ever: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|qi| self.could_ever_fit(id.0 as usize, *qi).is_ok())
            .collect();
        if ever.is_empty() {
            let mut reasons = why_not;
            for qi in &eligible {
                if let Err(e) = self.could_ever_fit(id.0 as usize, *qi) {
                    reasons.push(e);
                }
            }
            self.jobs.pop();
            let detail = if reasons.is_empty() {
                "the queue has no quota on any pool".to_string()
            } else {
                reasons.join("; ")
            };
            return Err(reject(format!(
                "no pool of queue `{}` can ever run this job: {detail}",
                self.queues[q].spec.name
            )));
        }
        self.jobs[id.0 as usize].eligible = eligible;
        self.queues[q].pending.insert((Reverse(key), id));
        self.wake_or_refresh(q);
        Ok(id)
    }

    /// Marks an admitted job done and frees its resources.
    pub fn finish(&mut self, id: JobId, _now: Time) -> Result<(), JobError> {
        self.expect_state(id, JobState::Admitted, "finish", "Admitted")?;
        self.release(id);
        self.jobs[id.0 as usize].state = JobState::Finished;
        Ok(())
    }

    /// Withdraws a pending, evicted or admitted job.
    pub fn cancel(&mut self, id: JobId, _now: Time) -> Result<(), JobError> {
        let state = self.job(id)?.state;
        match state {
            JobState::Admitted => self.release(id),
            JobState::Pending => self.remove_pending(id),
            JobState::Evicted => {}
            JobState::Finished | JobState::Cancelled => {
                return Err(JobError::WrongState {
                    job: id,
                    state,
                    op: "cancel",
                    expected: "Pending, Evicted or Admitted",
                });
            }
        }
        let job = &mut self.jobs[id.0 as usize];
        job.state = JobState::Cancelled;
        job.wait = None;
        Ok(())
    }

    /// Puts an evicted job back in its queue. It keeps its original submit time, so it keeps its
    /// FIFO place and the priority it gained by aging.
    pub fn requeue(&mut self, id: JobId, _now: Time) -> Result<(), JobError> {
        self.expect_state(id, JobState::Evicted, "requeue", "Evicted")?;
        let job = &mut self.jobs[id.0 as usize];
        job.state = JobState::Pending;
        let (q, key) = (job.queue, job.key);
        self.queues[q].pending.insert((Reverse(key), id));
        self.wake_or_refresh(q);
        Ok(())
    }

    pub fn status(&self, id: JobId) -> Result<JobStatus, JobError> {
        let job = self.job(id)?;
        let pool = job
            .quota
            .filter(|_| job.state == JobState::Admitted)
            .map(|qi| self.queues[job.queue].quotas[qi].pool);
        Ok(JobStatus {
            id,
            queue: self.queues[job.queue].spec.name.clone(),
            state: job.state,
            attempts: job.attempts,
            submitted_at: job.submitted,
            admitted_at: job.admitted_at,
            pool: pool.map(|p| self.pools[p].spec.name.clone()),
            placement: pool.map_or_else(Vec::new, |p| self.pools[p].nodes.describe(&job.allocs)),
            wait: self.why(id).ok().flatten(),
        })
    }

    /// Why a job waits (`None` unless it is pending or evicted).
    pub fn why(&self, id: JobId) -> Result<Option<WaitReason>, JobError> {
        let job = self.job(id)?;
        match job.state {
            JobState::Evicted => Ok(job.wait.clone()),
            JobState::Pending => {
                let queue = &self.queues[job.queue];
                let head = queue.pending.first().map(|k| k.1);
                if let Some(w) = &job.wait {
                    return Ok(Some(w.clone()));
                }
                Ok(Some(match head {
                    Some(h) if h != id && self.jobs[h.0 as usize].wait.is_some() => WaitReason {
                        kind: WaitKind::BehindHead,
                        pool: None,
                        message: format!(
                            "behind {h} in queue `{}`, which waits: {}",
                            queue.spec.name,
                            self.jobs[h.0 as usize]
                                .wait
                                .as_ref()
                                .map_or("", |w| w.message.as_str())
                        ),
                    },
                    _ => WaitReason {
                        kind: WaitKind::NotConsidered,
                        pool: None,
                        message: "not yet considered by the scheduler".into(),
                    },
                }))
            }
            _ => Ok(None),
        }
    }

    /// Pending jobs of a queue.
    pub fn pending_len(&self, queue: &str) -> Result<usize, ConfigError> {
        Ok(self.queues[self.queue_index(queue)?].pending.len())
    }

    /// Per pool: GPUs used, borrowed from the cohort, lent to the cohort; CPU used.
    pub fn queue_usage(&self, queue: &str) -> Result<Vec<PoolUsage>, ConfigError> {
        let q = self.queue_index(queue)?;
        let queue = &self.queues[q];
        let cohort = &self.cohorts[queue.cohort];
        let mut out = Vec::new();
        for qs in &queue.quotas {
            let mut borrowed_total = 0;
            let mut unused_total = 0;
            for m in &cohort.members {
                if let Some(o) = self.queues[*m].quotas.iter().find(|o| o.pool == qs.pool) {
                    borrowed_total += o.used[GPU].saturating_sub(o.nominal[GPU]);
                    unused_total += o.lendable[GPU] - o.above(GPU).min(o.lendable[GPU]);
                }
            }
            let mine = qs.lendable[GPU] - qs.above(GPU).min(qs.lendable[GPU]);
            let lent = if unused_total == 0 {
                0
            } else {
                (u128::from(borrowed_total) * u128::from(mine) / u128::from(unused_total)) as Milli
            };
            out.push(PoolUsage {
                pool: self.pools[qs.pool].spec.name.clone(),
                gpus_used: from_milli(qs.used[GPU]),
                gpus_borrowed: from_milli(qs.used[GPU].saturating_sub(qs.nominal[GPU])),
                gpus_lent: from_milli(lent.min(mine)),
                cpus_used: from_milli(qs.used[CPU]),
            });
        }
        Ok(out)
    }

    /// GPUs in use and in total across live nodes of a pool.
    pub fn pool_gpus(&self, pool: &str) -> Result<(f64, f64), ConfigError> {
        let p = &self.pools[self.pool_index(pool)?].nodes;
        Ok((
            from_milli(p.total_gpu - p.free_gpu),
            from_milli(p.total_gpu),
        ))
    }

    // ----------------------------------------------------------------------------------------
    // The admission loop

    /// Admits what can run now, in order, preempting where the rules allow. Each attempt costs
    /// O(log n) in pending jobs; queues whose head is blocked sleep until something they wait
    /// for changes.
    pub fn schedule(&mut self, now: Time) -> Vec<Decision> {
        let mut decisions = Vec::new();
        // Reservations live for one pass; the jobs that held them are retried first so that
        // they can reserve again before anything behind them starts.
        let holders: Vec<usize> = self
            .reserved_by
            .keys()
            .map(|id| self.jobs[id.0 as usize].queue)
            .collect();
        self.reservations.clear();
        self.reserved_by.clear();
        for q in holders {
            if self.queues[q].parked {
                self.unpark(q);
            }
        }
        self.fire(Wake::Always);
        self.in_pass = true;
        while let Some(entry) = self.active.pop_first() {
            let (_, _, _, id, q) = entry;
            self.queues[q].active = None;
            self.decisions_total += 1;
            let key = self.jobs[id.0 as usize].key;
            match self.try_admit(id, now, &mut decisions) {
                Ok(()) => {}
                Err(block) => {
                    if (block.quota_only || block.monotone) && self.queues[q].floor.is_none() {
                        self.queues[q].floor = Some((id, block.quota_only));
                    }
                    self.queues[q].tried += 1;
                    self.queues[q].wake_acc.extend(block.wake.iter().copied());
                    self.jobs[id.0 as usize].wait = Some(block.reason);
                }
            }
            self.advance(q, (Reverse(key), id));
        }
        // Wake-ups caused by this pass's preemptions count for the next pass, which keeps one
        // pass bounded by the queues awake at its start.
        self.in_pass = false;
        let deferred = std::mem::take(&mut self.deferred);
        for w in deferred {
            self.fire(w);
        }
        decisions
    }

    /// Moves a queue's cursor past `after`, or parks the queue.
    fn advance(&mut self, q: usize, after: (Reverse<i128>, JobId)) {
        let mut cursor = after;
        loop {
            let queue = &self.queues[q];
            let blocked = queue.tried > 0;
            if blocked && queue.tried > self.config.backfill_depth {
                self.park(q);
                return;
            }
            let next = queue
                .pending
                .range((Bound::Excluded(cursor), Bound::Unbounded))
                .next()
                .copied();
            match next {
                Some((Reverse(key), id)) => {
                    // A job that asks for at least as much as a job this queue just failed to
                    // fit in quota, on the same pools, cannot fit either: skip it cheaply.
                    if let Some(f) = queue.floor
                        && self.dominated(id.0 as usize, f.0.0 as usize, f.1)
                    {
                        self.queues[q].tried += 1;
                        cursor = (Reverse(key), id);
                        continue;
                    }
                    self.activate(q, key, id);
                }
                None if blocked => self.park(q),
                None => {
                    let queue = &mut self.queues[q];
                    queue.tried = 0;
                    queue.floor = None;
                    queue.wake_acc.clear();
                }
            }
            return;
        }
    }

    /// Job `j` cannot pass where `floor` failed: it asks for no less quota (`quota_only`), or
    /// it has the same pod shape, no fewer pods and no shorter runtime (capacity and
    /// reservations too).
    fn dominated(&self, j: usize, floor: usize, quota_only: bool) -> bool {
        let (a, b) = (&self.jobs[j], &self.jobs[floor]);
        if a.prio > b.prio || a.eligible != b.eligible {
            return false;
        }
        if quota_only {
            return a.req[GPU] >= b.req[GPU] && a.req[CPU] >= b.req[CPU];
        }
        let runtime = |x: &Job| x.spec.expected_runtime_ms.unwrap_or(u64::MAX);
        a.pod.gpu == b.pod.gpu
            && a.pod.cpu >= b.pod.cpu
            && a.pod.mem >= b.pod.mem
            && a.spec.pods >= b.spec.pods
            && runtime(a) >= runtime(b)
    }

    fn activate(&mut self, q: usize, key: i128, id: JobId) {
        let j = id.0 as usize;
        let first = self.jobs[j].eligible.first().copied();
        let req = self.jobs[j].req;
        let borrows = first.is_some_and(|qi| {
            let qs = &self.queues[q].quotas[qi];
            !self.cohorts[self.queues[q].cohort].implicit
                && qs.used[GPU] + req[GPU] > qs.nominal[GPU]
        });
        let drs = if self.config.fair_sharing && borrows {
            self.share(q, first.map(|qi| (qi, req)))
        } else {
            0
        };
        let hk = (borrows, drs, Reverse(key), id, q);
        if let Some(old) = self.queues[q].active.replace(hk) {
            self.active.remove(&old);
        }
        self.active.insert(hk);
    }

    fn park(&mut self, q: usize) {
        let queue = &mut self.queues[q];
        queue.parked = true;
        queue.tried = 0;
        queue.floor = None;
        let epoch = queue.epoch;
        let mut keys = std::mem::take(&mut queue.wake_acc);
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            keys.push(Wake::Always);
        }
        for k in keys {
            self.wakes.entry(k).or_default().push((q, epoch));
        }
    }

    fn fire(&mut self, key: Wake) {
        if self.in_pass {
            self.deferred.push(key);
            return;
        }
        if let Some(list) = self.wakes.remove(&key) {
            for (q, epoch) in list {
                if self.queues[q].parked && self.queues[q].epoch == epoch {
                    self.unpark(q);
                }
            }
        }
    }

    fn unpark(&mut self, q: usize) {
        let queue = &mut self.queues[q];
        queue.parked = false;
        queue.epoch += 1;
        queue.tried = 0;
        queue.floor = None;
        queue.wake_acc.clear();
        if let Some((Reverse(key), id)) = queue.pending.first().copied() {
            self.activate(q, key, id);
        }
    }

    fn wake_all(&mut self) {
        let keys: Vec<Wake> = self.wakes.keys().copied().collect();
        for k in keys {
            self.fire(k);
        }
    }

    /// After a submit or requeue: make sure the queue's best job gets looked at.
    fn wake_or_refresh(&mut self, q: usize) {
        if self.queues[q].parked {
            self.unpark(q);
            return;
        }
        let Some((Reverse(key), id)) = self.queues[q].pending.first().copied() else {
            return;
        };
        match self.queues[q].active {
            Some((_, _, Reverse(k), cur, _)) if (Reverse(k), cur) <= (Reverse(key), id) => {}
            _ => self.activate(q, key, id),
        }
    }

    fn try_admit(
        &mut self,
        id: JobId,
        now: Time,
        decisions: &mut Vec<Decision>,
    ) -> Result<(), Block> {
        let j = id.0 as usize;
        let q = self.jobs[j].queue;
        let eligible = self.jobs[j].eligible.clone();
        self.drop_reservations(id);
        let mut blocks: Vec<(usize, Block)> = Vec::new();
        for &qi in &eligible {
            let p = self.queues[q].quotas[qi].pool;
            if let Err(b) = self.reservation_allows(j, p, now) {
                blocks.push((qi, b));
                continue;
            }
            if let Err(b) = self.quota_check(q, qi, self.jobs[j].req) {
                blocks.push((qi, b));
                continue;
            }
            let pod = self.jobs[j].pod;
            let pods = self.jobs[j].spec.pods;
            let Some(allocs) = self.pools[p].nodes.place_gang(id, pods, &pod) else {
                blocks.push((qi, self.capacity_block(j, p)));
                continue;
            };
            if let Err(b) = self.run_hooks(j, p, now) {
                self.pools[p].nodes.release_gang(id, &allocs);
                blocks.push((qi, b));
                continue;
            }
            self.commit(j, qi, allocs, now, decisions);
            return Ok(());
        }
        for (qi, b) in &blocks {
            if !b.preemptible {
                continue;
            }
            if let Some((victims, allocs)) = self.find_victims(j, *qi) {
                let p = self.queues[q].quotas[*qi].pool;
                if let Err(_veto) = self.run_hooks(j, p, now) {
                    self.pools[p].nodes.release_gang(id, &allocs);
                    for (v, _) in victims.iter().rev() {
                        self.rebook(*v);
                    }
                    continue;
                }
                for (v, kind) in &victims {
                    self.evict(*v, id, *kind, decisions);
                }
                self.commit(j, *qi, allocs, now, decisions);
                return Ok(());
            }
        }
        let quota_only = blocks
            .iter()
            .all(|(_, b)| matches!(b.reason.kind, WaitKind::QueueQuota | WaitKind::CohortQuota));
        let Some((_, mut first)) = blocks.first().cloned() else {
            return Err(Block {
                reason: WaitReason {
                    kind: WaitKind::Capacity,
                    pool: None,
                    message: "no eligible pool left in the queue's quotas".into(),
                },
                wake: vec![Wake::Queue(q)],
                scope: None,
                preemptible: false,
                quota_only: false,
                monotone: false,
            });
        };
        if let Some((scope, deficit)) = first.scope {
            self.reserve(scope, j, deficit, now);
        }
        first.quota_only = quota_only;
        first.monotone = blocks.iter().all(|(_, b)| {
            matches!(
                b.reason.kind,
                WaitKind::QueueQuota
                    | WaitKind::CohortQuota
                    | WaitKind::Capacity
                    | WaitKind::Reservation
            )
        });
        Err(first)
    }

    fn run_hooks(&self, j: usize, p: usize, now: Time) -> Result<(), Block> {
        let job = &self.jobs[j];
        let req = AdmissionRequest {
            job: JobId(j as u64),
            spec: &job.spec,
            team: &self.queues[job.queue].spec.team,
            pool: &self.pools[p].spec,
            now,
        };
        for h in &self.hooks {
            if let Err(why) = h.check(&req) {
                return Err(Block {
                    reason: WaitReason {
                        kind: WaitKind::Vetoed,
                        pool: Some(self.pools[p].spec.name.clone()),
                        message: format!(
                            "policy `{}` vetoed pool `{}`: {why}",
                            h.name(),
                            self.pools[p].spec.name
                        ),
                    },
                    wake: vec![Wake::Always],
                    scope: None,
                    preemptible: false,
                    quota_only: false,
                    monotone: false,
                });
            }
        }
        Ok(())
    }

    fn quota_check(&self, q: usize, qi: usize, req: [Milli; 2]) -> Result<(), Block> {
        let queue = &self.queues[q];
        let qs = &queue.quotas[qi];
        let c = queue.cohort;
        let cohort = &self.cohorts[c];
        let pool_name = &self.pools[qs.pool].spec.name;
        let Some(cp) = cohort.pools.get(&qs.pool) else {
            return Ok(());
        };
        for r in [GPU, CPU] {
            if !qs.limited[r] || req[r] == 0 {
                continue;
            }
            let new_u = qs.used[r] + req[r];
            let name = RES_NAMES[r];
            let queue_block = |message: String| Block {
                reason: WaitReason {
                    kind: WaitKind::QueueQuota,
                    pool: Some(pool_name.clone()),
                    message,
                },
                wake: vec![Wake::Queue(q)],
                scope: None,
                preemptible: true,
                quota_only: false,
                monotone: false,
            };
            if let Some(b) = qs.borrow[r]
                && new_u > qs.nominal[r] + b
            {
                return Err(queue_block(format!(
                    "queue `{}` would use {} {name} on pool `{pool_name}`, over its nominal quota {} + borrowing limit {}",
                    queue.spec.name,
                    from_milli(new_u),
                    from_milli(qs.nominal[r]),
                    from_milli(b)
                )));
            }
            let new_above = new_u.saturating_sub(qs.guaranteed(r));
            let cohort_above = cp.above[r] - qs.above(r) + new_above;
            if cohort_above > cp.lendable[r] {
                if cohort.implicit {
                    let mut b = queue_block(format!(
                        "queue `{}` would use {} {name} on pool `{pool_name}`, over its nominal quota {} (no cohort to borrow from)",
                        queue.spec.name,
                        from_milli(new_u),
                        from_milli(qs.nominal[r])
                    ));
                    if r == GPU {
                        b.scope = Some((Scope::Cohort(c, qs.pool), cohort_above - cp.lendable[r]));
                    }
                    return Err(b);
                }
                let free = cp.lendable[r].saturating_sub(cp.above[r]);
                return Err(Block {
                    reason: WaitReason {
                        kind: WaitKind::CohortQuota,
                        pool: Some(pool_name.clone()),
                        message: format!(
                            "cohort `{}` has {} of {} shared {name} unused on pool `{pool_name}`; queue `{}` needs {} beyond its guaranteed quota",
                            cohort.name,
                            from_milli(free),
                            from_milli(cp.lendable[r]),
                            queue.spec.name,
                            from_milli(new_above - qs.above(r))
                        ),
                    },
                    wake: vec![Wake::Cohort(c)],
                    scope: (r == GPU)
                        .then_some((Scope::Cohort(c, qs.pool), cohort_above - cp.lendable[r])),
                    preemptible: true,
                    quota_only: false,
                    monotone: false,
                });
            }
        }
        Ok(())
    }

    fn capacity_block(&self, j: usize, p: usize) -> Block {
        let job = &self.jobs[j];
        let nodes = &self.pools[p].nodes;
        let name = &self.pools[p].spec.name;
        Block {
            reason: WaitReason {
                kind: WaitKind::Capacity,
                pool: Some(name.clone()),
                message: format!(
                    "pool `{name}` cannot place {} pod(s) of {} GPU now ({} of {} GPUs free)",
                    job.spec.pods,
                    from_milli(job.pod.gpu),
                    from_milli(nodes.free_gpu),
                    from_milli(nodes.total_gpu)
                ),
            },
            wake: vec![Wake::Pool(p)],
            scope: Some((
                Scope::Pool(p),
                job.req[GPU].saturating_sub(nodes.free_gpu).max(1),
            )),
            preemptible: true,
            quota_only: false,
            monotone: false,
        }
    }

    /// Records the earliest time a blocked job could start in `scope` (its "shadow time") from
    /// the expected ends of running jobs, unless a job ahead of it already holds the scope.
    fn reserve(&mut self, scope: Scope, j: usize, deficit: Milli, now: Time) {
        if self.reservations.contains_key(&scope) {
            return;
        }
        let ends = match scope {
            Scope::Pool(p) => &self.pools[p].ends,
            Scope::Cohort(c, p) => match self.cohorts[c].pools.get(&p) {
                Some(cp) => &cp.ends,
                None => return,
            },
        };
        let mut freed = 0;
        for ((end, _), gpus) in ends {
            freed += gpus;
            if freed >= deficit {
                let head = JobId(j as u64);
                self.reservations.insert(
                    scope,
                    Reservation {
                        head,
                        shadow: (*end).max(now),
                        extra: freed - deficit,
                    },
                );
                self.reserved_by.entry(head).or_default().push(scope);
                return;
            }
        }
    }

    /// A job behind a reservation may start if it ends before the shadow time or fits in what
    /// the reserved job leaves over.
    fn reservation_allows(&mut self, j: usize, p: usize, now: Time) -> Result<(), Block> {
        let job = &self.jobs[j];
        let c = self.queues[job.queue].cohort;
        let ends_by = job
            .spec
            .expected_runtime_ms
            .map(|rt| now.saturating_add(rt));
        let gpus = job.req[GPU];
        for scope in [Scope::Pool(p), Scope::Cohort(c, p)] {
            let Some(res) = self.reservations.get_mut(&scope) else {
                continue;
            };
            if res.head.0 as usize == j {
                continue;
            }
            if ends_by.is_some_and(|e| e <= res.shadow) {
                continue;
            }
            if gpus <= res.extra {
                res.extra -= gpus;
                continue;
            }
            let pool = self.pools[p].spec.name.clone();
            return Err(Block {
                reason: WaitReason {
                    kind: WaitKind::Reservation,
                    pool: Some(pool.clone()),
                    message: format!(
                        "starting now would delay {} (reserved on pool `{pool}` from t={} ms)",
                        res.head, res.shadow
                    ),
                },
                wake: vec![Wake::Pool(p), Wake::Cohort(c)],
                scope: None,
                preemptible: false,
                quota_only: false,
                monotone: false,
            });
        }
        Ok(())
    }

    fn commit(
        &mut self,
        j: usize,
        qi: usize,
        allocs: Vec<Alloc>,
        now: Time,
        decisions: &mut Vec<Decision>,
    ) {
        let id = JobId(j as u64);
        let q = self.jobs[j].queue;
        let p = self.queues[q].quotas[qi].pool;
        let req = self.jobs[j].req;
        self.add_usage(q, qi, req);
        self.admit_seq += 1;
        let seq = self.admit_seq;
        let placement = self.pools[p].nodes.describe(&allocs);
        let job = &mut self.jobs[j];
        job.state = JobState::Admitted;
        job.attempts += 1;
        job.quota = Some(qi);
        job.allocs = allocs;
        job.admitted_at = Some(now);
        job.admit_seq = seq;
        job.wait = None;
        job.end = job
            .spec
            .expected_runtime_ms
            .map(|rt| now.saturating_add(rt));
        let (prio, key, end) = (job.prio, job.key, job.end);
        self.queues[q].pending.remove(&(Reverse(key), id));
        self.queues[q].running.insert((prio, Reverse(seq), id));
        let c = self.queues[q].cohort;
        if let Some(end) = end {
            self.pools[p].ends.insert((end, id), req[GPU]);
            if let Some(cp) = self.cohorts[c].pools.get_mut(&p) {
                cp.ends.insert((end, id), req[GPU]);
            }
        }
        let qs = &self.queues[q].quotas[qi];
        let borrowing = qs.used[GPU] > qs.nominal[GPU];
        self.update_drs(q);
        decisions.push(Decision::Admitted {
            job: id,
            queue: self.queues[q].spec.name.clone(),
            pool: self.pools[p].spec.name.clone(),
            placement,
            borrowing,
        });
    }

    fn add_usage(&mut self, q: usize, qi: usize, req: [Milli; 2]) {
        let c = self.queues[q].cohort;
        let qs = &mut self.queues[q].quotas[qi];
        let p = qs.pool;
        let before = [qs.above(GPU), qs.above(CPU)];
        qs.used[GPU] += req[GPU];
        qs.used[CPU] += req[CPU];
        let after = [qs.above(GPU), qs.above(CPU)];
        let limited = qs.limited;
        if let Some(cp) = self.cohorts[c].pools.get_mut(&p) {
            for r in [GPU, CPU] {
                if limited[r] {
                    cp.above[r] = cp.above[r] + after[r] - before[r];
                }
            }
        }
    }

    fn sub_usage(&mut self, q: usize, qi: usize, req: [Milli; 2]) {
        let c = self.queues[q].cohort;
        let qs = &mut self.queues[q].quotas[qi];
        let p = qs.pool;
        let before = [qs.above(GPU), qs.above(CPU)];
        qs.used[GPU] -= req[GPU];
        qs.used[CPU] -= req[CPU];
        let after = [qs.above(GPU), qs.above(CPU)];
        let limited = qs.limited;
        if let Some(cp) = self.cohorts[c].pools.get_mut(&p) {
            for r in [GPU, CPU] {
                if limited[r] {
                    cp.above[r] = cp.above[r] + after[r] - before[r];
                }
            }
        }
    }

    /// Dominant-resource share of what a queue borrows, in thousandths of the cohort's
    /// lendable quota (0 while it stays within nominal), counting `extra` as if admitted.
    fn share(&self, q: usize, extra: Option<(usize, [Milli; 2])>) -> u64 {
        let queue = &self.queues[q];
        let cohort = &self.cohorts[queue.cohort];
        let mut drs = 0;
        if cohort.implicit {
            return 0;
        }
        for r in [GPU, CPU] {
            let mut borrowed = 0u128;
            let mut lendable = 0u128;
            for (qi, qs) in queue.quotas.iter().enumerate() {
                if !qs.limited[r] {
                    continue;
                }
                let add = extra.filter(|e| e.0 == qi).map_or(0, |e| e.1[r]);
                borrowed += u128::from((qs.used[r] + add).saturating_sub(qs.nominal[r]));
                lendable += cohort
                    .pools
                    .get(&qs.pool)
                    .map_or(0, |cp| u128::from(cp.lendable[r]));
            }
            let share = if borrowed == 0 {
                0
            } else {
                (borrowed * 1000)
                    .checked_div(lendable)
                    .map_or(1000, |s| s as u64)
            };
            drs = drs.max(share);
        }
        drs
    }

    /// Re-keys a queue's head after its usage changed.
    fn update_drs(&mut self, q: usize) {
        if let Some((_, _, Reverse(key), id, _)) = self.queues[q].active {
            self.activate(q, key, id);
        }
    }

    /// Frees an admitted job's quota, nodes and expected-end entries.
    fn release(&mut self, id: JobId) {
        self.unbook(id);
        self.forget_running(id);
    }

    /// Second half of `release`, for a job whose books are already released.
    fn forget_running(&mut self, id: JobId) {
        let j = id.0 as usize;
        let q = self.jobs[j].queue;
        let Some(qi) = self.jobs[j].quota else {
            return;
        };
        let p = self.queues[q].quotas[qi].pool;
        self.jobs[j].allocs.clear();
        let job = &self.jobs[j];
        self.queues[q]
            .running
            .remove(&(job.prio, Reverse(job.admit_seq), id));
        let c = self.queues[q].cohort;
        if let Some(end) = job.end {
            self.pools[p].ends.remove(&(end, id));
            if let Some(cp) = self.cohorts[c].pools.get_mut(&p) {
                cp.ends.remove(&(end, id));
            }
        }
        self.update_drs(q);
        self.fire(Wake::Queue(q));
        self.fire(Wake::Cohort(c));
        self.fire(Wake::Pool(p));
    }

    fn drop_reservations(&mut self, id: JobId) {
        if let Some(scopes) = self.reserved_by.remove(&id) {
            for s in scopes {
                if self.reservations.get(&s).is_some_and(|r| r.head == id) {
                    self.reservations.remove(&s);
                }
            }
        }
    }

    fn remove_pending(&mut self, id: JobId) {
        let job = &self.jobs[id.0 as usize];
        let q = job.queue;
        let k = (Reverse(job.key), id);
        self.queues[q].pending.remove(&k);
        self.drop_reservations(id);
        if self.queues[q].parked {
            self.unpark(q);
        } else if self.queues[q].active.is_some_and(|a| a.3 == id) {
            if let Some(old) = self.queues[q].active.take() {
                self.active.remove(&old);
            }
            self.advance(q, k);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Preemption

    /// Tentatively releases the books (quota and nodes) of an admitted job.
    fn unbook(&mut self, v: JobId) {
        let j = v.0 as usize;
        let (q, qi, req) = (self.jobs[j].queue, self.jobs[j].quota, self.jobs[j].req);
        let Some(qi) = qi else { return };
        let p = self.queues[q].quotas[qi].pool;
        self.sub_usage(q, qi, req);
        let allocs = self.jobs[j].allocs.clone();
        self.pools[p].nodes.release_gang(v, &allocs);
    }

    fn rebook(&mut self, v: JobId) {
        let j = v.0 as usize;
        let (q, qi, req) = (self.jobs[j].queue, self.jobs[j].quota, self.jobs[j].req);
        let Some(qi) = qi else { return };
        let p = self.queues[q].quotas[qi].pool;
        self.add_usage(q, qi, req);
        let allocs = self.jobs[j].allocs.clone();
        self.pools[p].nodes.rebook(v, &allocs);
    }

    /// Finds the fewest lower-ranked jobs whose eviction lets job `j` run in quota `qi`:
    /// first jobs of other queues that borrow from the cohort (reclaim), then lower-priority
    /// jobs of its own queue; lowest priority and most recently admitted first. On success the
    /// victims are unbooked and the job's pods are booked.
    fn find_victims(&mut self, j: usize, qi: usize) -> Option<Victims> {
        let q = self.jobs[j].queue;
        let prio = self.jobs[j].prio;
        let req = self.jobs[j].req;
        let id = JobId(j as u64);
        let qs = &self.queues[q].quotas[qi];
        let p = qs.pool;
        let c = self.queues[q].cohort;
        let spec = &self.queues[q].spec;
        let policy = spec.reclaim_within_cohort;
        let within = spec.within_queue == WithinQueuePreemption::LowerPriority;
        // Candidates come lazily: a k-way merge over the borrowing queues' running sets (each
        // ordered lowest priority, newest first), then the job's own queue.
        let mut heap: BinaryHeap<Reverse<(RunKey, usize)>> = BinaryHeap::new();
        if !self.cohorts[c].implicit
            && policy != ReclaimPolicy::Never
            && qs.used[GPU] + req[GPU] <= qs.nominal[GPU]
        {
            for &m in &self.cohorts[c].members {
                if m == q || !self.borrowing_in(m, p) {
                    continue;
                }
                if let Some(k) = self.next_candidate(m, p, None, policy == ReclaimPolicy::Any, prio)
                {
                    heap.push(Reverse((k, m)));
                }
            }
        }
        let mut own: Option<RunKey> = None;
        let mut own_done = !within;
        if heap.is_empty() && own_done {
            return None;
        }
        let pod = self.jobs[j].pod;
        let pods = self.jobs[j].spec.pods;
        let mut removed: Vec<(JobId, PreemptionKind)> = Vec::new();
        loop {
            let (v, kind) = if let Some(Reverse((k, m))) = heap.pop() {
                if let Some(n) =
                    self.next_candidate(m, p, Some(k), policy == ReclaimPolicy::Any, prio)
                {
                    heap.push(Reverse((n, m)));
                }
                (k.2, PreemptionKind::ReclaimWithinCohort)
            } else if !own_done {
                match self.next_candidate(q, p, own, false, prio) {
                    Some(k) => {
                        own = Some(k);
                        (k.2, PreemptionKind::WithinQueue)
                    }
                    None => {
                        own_done = true;
                        continue;
                    }
                }
            } else {
                break;
            };
            if kind == PreemptionKind::ReclaimWithinCohort
                && !self.borrowing_in(self.jobs[v.0 as usize].queue, p)
            {
                continue;
            }
            self.unbook(v);
            removed.push((v, kind));
            if self.quota_check(q, qi, req).is_err() {
                continue;
            }
            let Some(mut allocs) = self.pools[p].nodes.place_gang(id, pods, &pod) else {
                continue;
            };
            // Keep out only the victims that are needed.
            let last = removed.len() - 1;
            let mut keep: Vec<(JobId, PreemptionKind)> = vec![removed[last]];
            for &(v, kind) in removed[..last].iter().rev() {
                self.pools[p].nodes.release_gang(id, &allocs);
                self.rebook(v);
                let ok = self.quota_check(q, qi, req).is_ok();
                match self.pools[p].nodes.place_gang(id, pods, &pod) {
                    Some(a) if ok => allocs = a,
                    other => {
                        if let Some(a) = other {
                            self.pools[p].nodes.release_gang(id, &a);
                        }
                        self.unbook(v);
                        keep.push((v, kind));
                        match self.pools[p].nodes.place_gang(id, pods, &pod) {
                            Some(a) => allocs = a,
                            None => {
                                // Cannot happen: the same state placed it before.
                                for (k, _) in &keep {
                                    self.rebook(*k);
                                }
                                return None;
                            }
                        }
                    }
                }
            }
            keep.reverse();
            return Some((keep, allocs));
        }
        for (v, _) in removed.iter().rev() {
            self.rebook(*v);
        }
        None
    }

    /// The next running job of queue `q` on pool `p` after `after`, in eviction order, with a
    /// priority below `prio` unless `any`.
    fn next_candidate(
        &self,
        q: usize,
        p: usize,
        after: Option<RunKey>,
        any: bool,
        prio: i32,
    ) -> Option<RunKey> {
        let running = &self.queues[q].running;
        let iter: Box<dyn Iterator<Item = &RunKey>> = match after {
            Some(a) => Box::new(running.range((Bound::Excluded(a), Bound::Unbounded))),
            None => Box::new(running.iter()),
        };
        for r in iter {
            if !any && r.0 >= prio {
                return None;
            }
            let v = &self.jobs[r.2.0 as usize];
            if v.quota.map(|vq| self.queues[q].quotas[vq].pool) == Some(p) {
                return Some(*r);
            }
        }
        None
    }

    fn borrowing_in(&self, q: usize, p: usize) -> bool {
        self.queues[q]
            .quotas
            .iter()
            .any(|qs| qs.pool == p && qs.used[GPU] > qs.nominal[GPU])
    }

    /// Evicts an already unbooked victim.
    fn evict(&mut self, v: JobId, by: JobId, kind: PreemptionKind, decisions: &mut Vec<Decision>) {
        self.forget_running(v);
        let queue = self.queues[self.jobs[by.0 as usize].queue]
            .spec
            .name
            .clone();
        let reason = match kind {
            PreemptionKind::WithinQueue => {
                format!("preempted by higher-priority {by} in queue `{queue}`")
            }
            PreemptionKind::ReclaimWithinCohort => {
                format!("queue `{queue}` reclaimed its lent quota for {by}")
            }
            PreemptionKind::NodeLost => "node lost".to_string(),
        };
        let job = &mut self.jobs[v.0 as usize];
        job.state = JobState::Evicted;
        job.wait = Some(WaitReason {
            kind: WaitKind::Evicted,
            pool: None,
            message: format!("{reason}; waiting for requeue"),
        });
        decisions.push(Decision::Preempted {
            job: v,
            by,
            kind,
            reason,
        });
    }

    // ----------------------------------------------------------------------------------------
    // Eligibility

    /// Quota indices (in order) whose pool suits the job, and why the others do not.
    fn eligibility(&self, j: usize) -> (Vec<usize>, Vec<String>) {
        let job = &self.jobs[j];
        let queue = &self.queues[job.queue];
        let mut ok = Vec::new();
        let mut why = Vec::new();
        for (qi, qs) in queue.quotas.iter().enumerate() {
            let pool = &self.pools[qs.pool].spec;
            match self.pool_suits(job, queue, pool) {
                Ok(()) => ok.push(qi),
                Err(e) => why.push(format!("pool `{}`: {e}", pool.name)),
            }
        }
        (ok, why)
    }

    fn pool_suits(&self, job: &Job, queue: &Queue, pool: &PoolSpec) -> Result<(), String> {
        let class = job.spec.class;
        if !pool.workload_classes.is_empty() && !pool.workload_classes.contains(&class) {
            return Err(format!("does not accept class {}", class.as_str()));
        }
        let policy = pool
            .class_policies
            .get(&class)
            .or_else(|| queue.spec.class_policies.get(&class))
            .copied()
            .unwrap_or_else(|| default_policy(class));
        match (&pool.accelerator, job.pod.gpu) {
            (Some(_), _) if policy.cpu_pools_only => {
                return Err(format!("class {} runs on CPU pools only", class.as_str()));
            }
            (None, g) if g > 0 => return Err("has no GPUs".into()),
            _ => {}
        }
        if let Some(t) = &job.spec.gpu_type
            && pool.accelerator.as_deref() != Some(t.as_str())
        {
            return Err(format!(
                "has {} GPUs, the job needs {t}",
                pool.accelerator.as_deref().unwrap_or("no")
            ));
        }
        if pool.procurement == Procurement::Spot {
            let allowed = match policy.spot {
                SpotRule::Never => Err(format!("class {} never runs on spot", class.as_str())),
                SpotRule::WithCheckpoint if !job.spec.checkpoint_dir => Err(format!(
                    "class {} runs on spot only with a checkpoint directory",
                    class.as_str()
                )),
                _ if !job.spec.spot_tolerant => Err("the job does not tolerate spot".into()),
                _ => Ok(()),
            };
            allowed?;
        }
        for (k, v) in &job.spec.constraints {
            let have = if k == "region" {
                pool.region.as_ref()
            } else {
                pool.labels.get(k)
            };
            if have != Some(v) {
                return Err(format!(
                    "{k} is {}, the job needs {v}",
                    have.map_or("unset", String::as_str)
                ));
            }
        }
        Ok(())
    }

    fn could_ever_fit(&self, j: usize, qi: usize) -> Result<(), String> {
        let job = &self.jobs[j];
        let pool = &self.pools[self.queues[job.queue].quotas[qi].pool];
        let n = &pool.nodes;
        let name = &pool.spec.name;
        let per_pod_gpus = job.pod.gpu.div_ceil(1000) as u32;
        if per_pod_gpus > n.max_node_gpus {
            return Err(format!(
                "pool `{name}`: a pod needs {} GPUs, its largest node has {}",
                from_milli(job.pod.gpu),
                n.max_node_gpus
            ));
        }
        if job.req[GPU] > n.total_gpu {
            return Err(format!(
                "pool `{name}`: the job needs {} GPUs, the pool has {}",
                from_milli(job.req[GPU]),
                from_milli(n.total_gpu)
            ));
        }
        if job.pod.cpu > n.max_node_cpu || job.pod.mem > n.max_node_mem {
            return Err(format!(
                "pool `{name}`: a pod needs {} CPU cores and {} MiB, its largest node has {} and {}",
                from_milli(job.pod.cpu),
                job.pod.mem,
                from_milli(n.max_node_cpu),
                n.max_node_mem
            ));
        }
        let pods = u64::from(job.spec.pods);
        if pods > 1 {
            let room = n.capacity_for(job.pod);
            if room < pods {
                return Err(format!(
                    "pool `{name}`: the gang's {pods} pods of {} GPUs, {} CPU cores and {} MiB \
                     each do not fit its nodes, which hold at most {room} such pods",
                    from_milli(job.pod.gpu),
                    from_milli(job.pod.cpu),
                    job.pod.mem
                ));
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Small helpers

    fn pool_index(&self, name: &str) -> Result<usize, ConfigError> {
        self.pool_by_name
            .get(name)
            .copied()
            .ok_or_else(|| ConfigError::UnknownPool(name.to_string()))
    }

    fn queue_index(&self, name: &str) -> Result<usize, ConfigError> {
        self.queue_by_name
            .get(name)
            .copied()
            .ok_or_else(|| ConfigError::UnknownQueue(name.to_string()))
    }

    fn job(&self, id: JobId) -> Result<&Job, JobError> {
        self.jobs.get(id.0 as usize).ok_or(JobError::UnknownJob(id))
    }

    fn expect_state(
        &self,
        id: JobId,
        want: JobState,
        op: &'static str,
        expected: &'static str,
    ) -> Result<(), JobError> {
        let state = self.job(id)?.state;
        if state == want {
            Ok(())
        } else {
            Err(JobError::WrongState {
                job: id,
                state,
                op,
                expected,
            })
        }
    }
}

fn invalid(what: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        what: what.to_string(),
        problem: problem.to_string(),
    }
}
