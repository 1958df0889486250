//! A small scenario language for scheduler tests: a cluster (pools, nodes, queues) and a list
//! of steps with the decisions and wait reasons each step must produce.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use plinth_sched::*;

pub struct Cluster {
    pub config: SchedulerConfig,
    pub pools: Vec<(PoolSpec, Vec<NodeSpec>)>,
    pub queues: Vec<QueueSpec>,
}

pub enum Step {
    /// Submit a job under a name; it must be accepted.
    Submit(&'static str, Time, JobSpec),
    /// Submit must be rejected with a reason containing the text.
    Reject(JobSpec, &'static str),
    /// Run `schedule(now)`: exactly these jobs are admitted and these preempted.
    Schedule {
        at: Time,
        admitted: &'static [&'static str],
        preempted: &'static [&'static str],
    },
    Finish(&'static str, Time),
    Cancel(&'static str),
    Requeue(&'static str),
    /// A node goes away; exactly these jobs are evicted.
    RemoveNode(&'static str, &'static str, &'static [&'static str]),
    /// The job waits for this kind of reason, whose message contains the text.
    Waits(&'static str, WaitKind, &'static str),
    /// The job runs on this pool, pods on these nodes (in pod order).
    RunsOn(&'static str, &'static str, &'static [&'static str]),
    /// The job is in this state after this many admissions.
    State(&'static str, JobState, u32),
    /// GPUs used, borrowed and lent by a queue on a pool.
    Usage(&'static str, &'static str, f64, f64, f64),
    /// Preempted jobs so far were of this kind.
    PreemptedAs(&'static str, PreemptionKind),
    Hook(Box<dyn AdmissionHook>),
}

pub struct World {
    pub s: Scheduler,
    pub ids: BTreeMap<&'static str, JobId>,
    pub kinds: BTreeMap<&'static str, PreemptionKind>,
}

impl World {
    pub fn new(c: Cluster) -> World {
        let mut s = Scheduler::new(c.config);
        for (pool, nodes) in c.pools {
            let name = pool.name.clone();
            s.add_pool(pool).expect("pool");
            for n in nodes {
                s.add_node(&name, n).expect("node");
            }
        }
        for q in c.queues {
            s.add_queue(q).expect("queue");
        }
        World {
            s,
            ids: BTreeMap::new(),
            kinds: BTreeMap::new(),
        }
    }

    pub fn id(&self, name: &str) -> JobId {
        *self
            .ids
            .get(name)
            .unwrap_or_else(|| panic!("no job named {name}"))
    }

    pub fn name(&self, id: JobId) -> &'static str {
        self.ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| *k)
            .unwrap_or("?")
    }

    pub fn step(&mut self, scenario: &str, i: usize, step: Step) {
        let ctx = format!("scenario `{scenario}`, step {i}");
        match step {
            Step::Submit(name, at, job) => {
                let id = self
                    .s
                    .submit(job, at)
                    .unwrap_or_else(|e| panic!("{ctx}: submit {name}: {e}"));
                self.ids.insert(name, id);
            }
            Step::Reject(job, text) => match self.s.submit(job, 0) {
                Ok(id) => panic!("{ctx}: expected a rejection, got {id}"),
                Err(e) => assert!(
                    e.reason.contains(text),
                    "{ctx}: rejection `{}` lacks `{text}`",
                    e.reason
                ),
            },
            Step::Schedule {
                at,
                admitted,
                preempted,
            } => {
                let mut got_a = BTreeSet::new();
                let mut got_p = BTreeSet::new();
                for d in self.s.schedule(at) {
                    match d {
                        Decision::Admitted { job, .. } => {
                            got_a.insert(self.name(job));
                        }
                        Decision::Preempted { job, kind, .. } => {
                            let n = self.name(job);
                            got_p.insert(n);
                            self.kinds.insert(n, kind);
                        }
                    }
                }
                let want_a: BTreeSet<&str> = admitted.iter().copied().collect();
                let want_p: BTreeSet<&str> = preempted.iter().copied().collect();
                assert_eq!(got_a, want_a, "{ctx}: admitted at t={at}");
                assert_eq!(got_p, want_p, "{ctx}: preempted at t={at}");
            }
            Step::Finish(name, at) => self
                .s
                .finish(self.id(name), at)
                .unwrap_or_else(|e| panic!("{ctx}: finish {name}: {e}")),
            Step::Cancel(name) => self
                .s
                .cancel(self.id(name), 0)
                .unwrap_or_else(|e| panic!("{ctx}: cancel {name}: {e}")),
            Step::Requeue(name) => self
                .s
                .requeue(self.id(name), 0)
                .unwrap_or_else(|e| panic!("{ctx}: requeue {name}: {e}")),
            Step::RemoveNode(pool, node, evicted) => {
                let got: BTreeSet<&str> = self
                    .s
                    .remove_node(pool, node)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"))
                    .into_iter()
                    .map(|id| self.name(id))
                    .collect();
                let want: BTreeSet<&str> = evicted.iter().copied().collect();
                assert_eq!(got, want, "{ctx}: evicted by losing {node}");
            }
            Step::Waits(name, kind, text) => {
                let w = self
                    .s
                    .why(self.id(name))
                    .expect("job")
                    .unwrap_or_else(|| panic!("{ctx}: {name} does not wait"));
                assert_eq!(w.kind, kind, "{ctx}: {name} waits because: {}", w.message);
                assert!(
                    w.message.contains(text),
                    "{ctx}: reason `{}` lacks `{text}`",
                    w.message
                );
            }
            Step::RunsOn(name, pool, nodes) => {
                let st = self.s.status(self.id(name)).expect("job");
                assert_eq!(st.state, JobState::Admitted, "{ctx}: {name} state");
                assert_eq!(st.pool.as_deref(), Some(pool), "{ctx}: {name} pool");
                let got: Vec<&str> = st.placement.iter().map(|p| p.node.as_str()).collect();
                assert_eq!(got, nodes.to_vec(), "{ctx}: {name} nodes");
            }
            Step::State(name, state, attempts) => {
                let st = self.s.status(self.id(name)).expect("job");
                assert_eq!((st.state, st.attempts), (state, attempts), "{ctx}: {name}");
            }
            Step::Usage(queue, pool, used, borrowed, lent) => {
                let u = self.s.queue_usage(queue).expect("queue");
                let u = u
                    .iter()
                    .find(|u| u.pool == pool)
                    .unwrap_or_else(|| panic!("{ctx}: {queue} has no quota on {pool}"));
                assert_eq!(
                    (u.gpus_used, u.gpus_borrowed, u.gpus_lent),
                    (used, borrowed, lent),
                    "{ctx}: usage of {queue} on {pool}"
                );
            }
            Step::PreemptedAs(name, kind) => {
                assert_eq!(self.kinds.get(name), Some(&kind), "{ctx}: {name}");
            }
            Step::Hook(h) => self.s.add_hook(h),
        }
    }
}

pub fn run(name: &str, cluster: Cluster, steps: Vec<Step>) {
    let mut w = World::new(cluster);
    for (i, step) in steps.into_iter().enumerate() {
        w.step(name, i, step);
    }
}

// ---- builders -----------------------------------------------------------------------------

pub fn gpu_pool(name: &str, ty: &str, nodes: u32, gpus: u32) -> (PoolSpec, Vec<NodeSpec>) {
    pool_of(PoolSpec::gpu(name, ty, Procurement::OnDemand), nodes, gpus)
}

pub fn pool_of(spec: PoolSpec, nodes: u32, gpus: u32) -> (PoolSpec, Vec<NodeSpec>) {
    let prefix = spec.name.clone();
    let nodes = (0..nodes)
        .map(|i| NodeSpec::new(&format!("{prefix}-{i}"), gpus, 64, 512 * 1024))
        .collect();
    (spec, nodes)
}

pub fn queue(name: &str, cohort: Option<&str>, quotas: &[(&str, f64)]) -> QueueSpec {
    QueueSpec::new(
        name,
        "team",
        cohort,
        quotas.iter().map(|(p, n)| QuotaSpec::gpus(p, *n)).collect(),
    )
}

/// A training job of `pods` × `gpus` in `queue`.
pub fn job(queue: &str, pods: u32, gpus: f64) -> JobSpec {
    JobSpec::new(queue, WorkloadClass::Training, pods, gpus)
}

pub fn prio(mut j: JobSpec, p: i32) -> JobSpec {
    j.priority = Some(p);
    j
}

pub fn runtime(mut j: JobSpec, ms: u64) -> JobSpec {
    j.expected_runtime_ms = Some(ms);
    j
}

pub fn config() -> SchedulerConfig {
    SchedulerConfig {
        aging_ms_per_level: None,
        fair_sharing: true,
        backfill_depth: 8,
    }
}

pub fn sched(at: Time, admitted: &'static [&'static str]) -> Step {
    Step::Schedule {
        at,
        admitted,
        preempted: &[],
    }
}
