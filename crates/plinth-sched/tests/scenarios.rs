//! Table-driven scenarios: each row is a cluster and a list of steps with expected decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use plinth_sched::*;

use Step::*;

fn cluster(pools: Vec<(PoolSpec, Vec<NodeSpec>)>, queues: Vec<QueueSpec>) -> Cluster {
    Cluster {
        config: config(),
        pools,
        queues,
    }
}

fn one_pool(queues: Vec<QueueSpec>) -> Cluster {
    cluster(vec![gpu_pool("p", "h100", 2, 8)], queues)
}

fn with_limits(mut q: QueueSpec, borrow: Option<f64>, lend: Option<f64>) -> QueueSpec {
    q.quotas[0].gpus.borrowing_limit = borrow;
    q.quotas[0].gpus.lending_limit = lend;
    q
}

fn reclaim(mut q: QueueSpec, r: ReclaimPolicy) -> QueueSpec {
    q.reclaim_within_cohort = r;
    q
}

fn table(rows: Vec<(&str, Cluster, Vec<Step>)>) {
    for (name, c, steps) in rows {
        run(name, c, steps);
    }
}

#[test]
fn quotas_borrowing_and_lending() {
    table(vec![
        (
            "nominal quota without cohort",
            one_pool(vec![queue("a", None, &[("p", 4.0)])]),
            vec![
                Submit("j1", 0, job("a", 1, 4.0)),
                Submit("j2", 1, job("a", 1, 1.0)),
                sched(2, &["j1"]),
                Waits("j2", WaitKind::QueueQuota, "over its nominal quota 4"),
                Usage("a", "p", 4.0, 0.0, 0.0),
                Finish("j1", 3),
                sched(3, &["j2"]),
            ],
        ),
        (
            "borrowing up to the borrowing limit",
            one_pool(vec![
                with_limits(queue("a", Some("c"), &[("p", 4.0)]), Some(2.0), None),
                queue("b", Some("c"), &[("p", 4.0)]),
            ]),
            vec![
                Submit("a1", 0, job("a", 1, 2.0)),
                Submit("a2", 0, job("a", 1, 2.0)),
                Submit("a3", 0, job("a", 1, 2.0)),
                Submit("a4", 0, job("a", 1, 2.0)),
                sched(1, &["a1", "a2", "a3"]),
                Waits("a4", WaitKind::QueueQuota, "borrowing limit 2"),
                Usage("a", "p", 6.0, 2.0, 0.0),
                Usage("b", "p", 0.0, 0.0, 2.0),
            ],
        ),
        (
            "borrowing stops where the cohort runs out",
            one_pool(vec![
                queue("a", Some("c"), &[("p", 4.0)]),
                queue("b", Some("c"), &[("p", 2.0)]),
            ]),
            vec![
                Submit("a1", 0, job("a", 1, 4.0)),
                Submit("a2", 0, job("a", 1, 2.0)),
                Submit("a3", 0, job("a", 1, 1.0)),
                sched(1, &["a1", "a2"]),
                Waits("a3", WaitKind::CohortQuota, "cohort `c` has 0 of 6"),
                Submit("b1", 2, job("b", 1, 1.0)),
                // b is within its nominal quota but the lent GPUs are in use; no reclaim.
                sched(2, &[]),
                Waits("b1", WaitKind::CohortQuota, "cohort `c`"),
            ],
        ),
        (
            "lending limit keeps part of the nominal quota",
            one_pool(vec![
                with_limits(queue("a", Some("c"), &[("p", 4.0)]), None, Some(1.0)),
                queue("b", Some("c"), &[("p", 4.0)]),
            ]),
            vec![
                Submit("b1", 0, job("b", 1, 2.0)),
                Submit("b2", 0, job("b", 1, 2.0)),
                Submit("b3", 0, job("b", 1, 2.0)),
                Submit("b4", 0, job("b", 1, 1.0)),
                // b may use 4 + the 1 GPU a lends: b1, b2, then b3 (2) does not fit, b4 (1) does.
                sched(1, &["b1", "b2", "b4"]),
                Waits("b3", WaitKind::CohortQuota, "cohort `c`"),
                Usage("b", "p", 5.0, 1.0, 0.0),
                Usage("a", "p", 0.0, 0.0, 1.0),
                // a still has its 3 guaranteed GPUs.
                Submit("a1", 2, job("a", 1, 3.0)),
                sched(2, &["a1"]),
            ],
        ),
    ]);
}

#[test]
fn reclaim_and_preemption() {
    let lender = |r| {
        one_pool(vec![
            reclaim(queue("a", Some("c"), &[("p", 4.0)]), r),
            queue("b", Some("c"), &[("p", 12.0)]),
        ])
    };
    let borrow_all = || {
        vec![
            Submit("b1", 0, prio(job("b", 1, 8.0), 10)),
            Submit("b2", 1, prio(job("b", 1, 4.0), 10)),
            Submit("b3", 2, prio(job("b", 1, 4.0), 10)),
            sched(3, &["b1", "b2", "b3"]),
            Usage("b", "p", 16.0, 4.0, 0.0),
            Usage("a", "p", 0.0, 0.0, 4.0),
        ]
    };
    let mut any = borrow_all();
    any.extend([
        Submit("a1", 4, prio(job("a", 1, 2.0), 0)),
        // a is within nominal; b borrows: the most recently admitted borrower goes.
        Schedule {
            at: 5,
            admitted: &["a1"],
            preempted: &["b3"],
        },
        PreemptedAs("b3", PreemptionKind::ReclaimWithinCohort),
        State("b3", JobState::Evicted, 1),
        Waits("b3", WaitKind::Evicted, "reclaimed its lent quota"),
        Requeue("b3"),
        sched(6, &[]),
        Waits("b3", WaitKind::CohortQuota, "cohort `c` has 2 of 16"),
    ]);
    let mut lower_only = borrow_all();
    lower_only.extend([
        Submit("a1", 4, prio(job("a", 1, 2.0), 0)),
        sched(5, &[]),
        Waits("a1", WaitKind::CohortQuota, "cohort `c`"),
        Submit("a2", 6, prio(job("a", 1, 2.0), 20)),
        Schedule {
            at: 7,
            admitted: &["a2", "a1"],
            preempted: &["b3"],
        },
    ]);
    let mut never = borrow_all();
    never.extend([
        Submit("a1", 4, prio(job("a", 1, 2.0), 100)),
        sched(5, &[]),
        Waits("a1", WaitKind::CohortQuota, "cohort `c`"),
    ]);
    let within = |p: WithinQueuePreemption| {
        let mut q = queue("a", None, &[("p", 4.0)]);
        q.within_queue = p;
        one_pool(vec![q])
    };
    table(vec![
        ("reclaim any", lender(ReclaimPolicy::Any), any),
        (
            "reclaim lower priority",
            lender(ReclaimPolicy::LowerPriority),
            lower_only,
        ),
        ("reclaim never", lender(ReclaimPolicy::Never), never),
        (
            "within queue: lower priority first, newest first, never equal",
            within(WithinQueuePreemption::LowerPriority),
            vec![
                Submit("low1", 0, prio(job("a", 1, 2.0), 1)),
                Submit("low2", 1, prio(job("a", 1, 1.0), 2)),
                Submit("low3", 2, prio(job("a", 1, 1.0), 1)),
                sched(3, &["low1", "low2", "low3"]),
                Submit("eq", 4, prio(job("a", 1, 1.0), 1)),
                sched(5, &[]),
                Waits("eq", WaitKind::QueueQuota, "nominal quota 4"),
                Cancel("eq"),
                Submit("high", 6, prio(job("a", 1, 2.0), 5)),
                // Priority 1 jobs go first: low3 (newest) then low1; low3 alone frees 1 GPU,
                // low1 frees 2, and low3 is then not needed.
                Schedule {
                    at: 7,
                    admitted: &["high"],
                    preempted: &["low1"],
                },
                PreemptedAs("low1", PreemptionKind::WithinQueue),
                State("low3", JobState::Admitted, 1),
            ],
        ),
        (
            "within queue: never",
            within(WithinQueuePreemption::Never),
            vec![
                Submit("low", 0, prio(job("a", 1, 4.0), 1)),
                sched(1, &["low"]),
                Submit("high", 2, prio(job("a", 1, 2.0), 9)),
                sched(3, &[]),
                Waits("high", WaitKind::QueueQuota, "queue `a`"),
            ],
        ),
    ]);
}

#[test]
fn fair_sharing_by_dominant_resource_share() {
    let setup = |fair: bool| Cluster {
        config: SchedulerConfig {
            fair_sharing: fair,
            ..config()
        },
        pools: vec![gpu_pool("p", "h100", 3, 4)],
        queues: vec![
            queue("a", Some("c"), &[("p", 4.0)]),
            queue("b", Some("c"), &[("p", 4.0)]),
            queue("z", Some("c"), &[("p", 4.0)]),
        ],
    };
    let prefix = || {
        vec![
            Submit("a1", 0, job("a", 1, 1.0)),
            Submit("a2", 0, job("a", 1, 1.0)),
            Submit("a3", 0, job("a", 1, 1.0)),
            Submit("a4", 0, job("a", 1, 1.0)),
            Submit("a5", 0, job("a", 1, 1.0)),
            Submit("a6", 0, job("a", 1, 1.0)),
            sched(1, &["a1", "a2", "a3", "a4", "a5", "a6"]),
            // a borrows 2 of the cohort's 12. Now a asks for more, before b.
            Submit("a7", 2, job("a", 1, 1.0)),
            Submit("a8", 2, job("a", 1, 1.0)),
            Submit("b1", 3, job("b", 1, 1.0)),
            Submit("b2", 3, job("b", 1, 1.0)),
            Submit("b3", 3, job("b", 1, 1.0)),
            Submit("b4", 3, job("b", 1, 1.0)),
            Submit("b5", 3, job("b", 1, 1.0)),
            Submit("b6", 3, job("b", 1, 1.0)),
        ]
    };
    let mut fair = prefix();
    fair.extend([
        // b (share 0, then 1/12) goes before a (2/12) until b's share reaches a's.
        sched(4, &["b1", "b2", "b3", "b4", "b5", "b6"]),
        Waits("a7", WaitKind::CohortQuota, "cohort `c`"),
    ]);
    let mut fifo = prefix();
    fifo.extend([
        sched(4, &["a7", "a8", "b1", "b2", "b3", "b4"]),
        Waits("b5", WaitKind::CohortQuota, "cohort `c`"),
    ]);
    table(vec![
        ("fair sharing on", setup(true), fair),
        ("fair sharing off: FIFO", setup(false), fifo),
    ]);
}

#[test]
fn gang_gpu_type_fractional_and_label_placement() {
    let two_types = || {
        cluster(
            vec![gpu_pool("h", "h100", 1, 4), gpu_pool("x", "a100", 1, 4)],
            vec![queue("a", None, &[("h", 4.0), ("x", 4.0)])],
        )
    };
    let mut eu = PoolSpec::gpu("eu", "h100", Procurement::OnDemand);
    eu.region = Some("eu-west".into());
    eu.labels.insert("residency".into(), "eu".into());
    let mut us = PoolSpec::gpu("us", "h100", Procurement::OnDemand);
    us.region = Some("us-east".into());
    let labelled = || {
        cluster(
            vec![pool_of(us.clone(), 1, 4), pool_of(eu.clone(), 1, 4)],
            vec![queue("a", None, &[("us", 4.0), ("eu", 4.0)])],
        )
    };
    let with = |mut j: JobSpec, k: &str, v: &str| {
        j.constraints.insert(k.into(), v.into());
        j
    };
    let typed = |mut j: JobSpec, t: &str| {
        j.gpu_type = Some(t.into());
        j
    };
    table(vec![
        (
            "gang spans nodes, all or nothing",
            cluster(
                vec![gpu_pool("p", "h100", 2, 4)],
                vec![queue("a", None, &[("p", 100.0)])],
            ),
            vec![
                Submit("g1", 0, job("a", 3, 2.0)),
                sched(1, &["g1"]),
                RunsOn("g1", "p", &["p-0", "p-0", "p-1"]),
                Submit("g2", 2, job("a", 2, 2.0)),
                sched(3, &[]),
                Waits("g2", WaitKind::Capacity, "2 of 8 GPUs free"),
                State("g2", JobState::Pending, 0),
                Submit("one", 4, job("a", 1, 2.0)),
                sched(5, &["one"]),
                Reject(job("a", 3, 3.0), "the job needs 9 GPUs, the pool has 8"),
                // 5.4 GPUs in all, but a GPU holds one 0.6 share: eight such pods at most.
                Reject(job("a", 9, 0.6), "hold at most 8 such pods"),
                Reject(
                    job("a", 1, 5.0),
                    "a pod needs 5 GPUs, its largest node has 4",
                ),
                Reject(job("a", 1, 1.5), "neither a share of one GPU"),
            ],
        ),
        (
            "GPU type constraint picks the matching pool",
            two_types(),
            vec![
                Submit("any", 0, job("a", 1, 1.0)),
                Submit("a100", 0, typed(job("a", 1, 1.0), "a100")),
                sched(1, &["any", "a100"]),
                RunsOn("any", "h", &["h-0"]),
                RunsOn("a100", "x", &["x-0"]),
                Reject(typed(job("a", 1, 1.0), "b200"), "unknown GPU type `b200`"),
            ],
        ),
        (
            "fractional GPUs share one GPU; packing prefers used nodes",
            cluster(
                vec![gpu_pool("p", "h100", 2, 4)],
                vec![queue("a", None, &[("p", 8.0)])],
            ),
            vec![
                Submit("half1", 0, job("a", 1, 0.5)),
                Submit("half2", 0, job("a", 1, 0.5)),
                Submit("two", 0, job("a", 1, 2.0)),
                Submit("one", 0, job("a", 1, 1.0)),
                sched(1, &["half1", "half2", "two", "one"]),
                RunsOn("half1", "p", &["p-0"]),
                RunsOn("half2", "p", &["p-0"]),
                RunsOn("two", "p", &["p-0"]),
                RunsOn("one", "p", &["p-0"]),
                Usage("a", "p", 4.0, 0.0, 0.0),
                Submit("big", 2, job("a", 1, 4.0)),
                sched(3, &["big"]),
                RunsOn("big", "p", &["p-1"]),
            ],
        ),
        (
            "region and residency constraints",
            labelled(),
            vec![
                Submit("eu", 0, with(job("a", 1, 1.0), "residency", "eu")),
                Submit("west", 0, with(job("a", 1, 1.0), "region", "eu-west")),
                Submit("free", 0, job("a", 1, 1.0)),
                sched(1, &["eu", "west", "free"]),
                RunsOn("eu", "eu", &["eu-0"]),
                RunsOn("west", "eu", &["eu-0"]),
                RunsOn("free", "us", &["us-0"]),
                Reject(
                    with(job("a", 1, 1.0), "region", "ap-south"),
                    "region is eu-west, the job needs ap-south",
                ),
            ],
        ),
    ]);
}

#[test]
fn fractional_shares_land_on_the_same_gpu() {
    let mut w = World::new(cluster(
        vec![gpu_pool("p", "h100", 1, 2)],
        vec![queue("a", None, &[("p", 2.0)])],
    ));
    let a = w.s.submit(job("a", 1, 0.5), 0).unwrap();
    let b = w.s.submit(job("a", 1, 0.5), 0).unwrap();
    let c = w.s.submit(job("a", 1, 0.75), 0).unwrap();
    assert_eq!(w.s.schedule(1).len(), 3);
    let gpus = |id| w.s.status(id).unwrap().placement[0].gpus.clone();
    assert_eq!(gpus(a), vec![(0, 500)]);
    assert_eq!(gpus(b), vec![(0, 500)]);
    assert_eq!(gpus(c), vec![(1, 750)]);
    assert_eq!(w.s.pool_gpus("p").unwrap(), (1.75, 2.0));
}

struct DenyPool {
    pool: &'static str,
}

impl AdmissionHook for DenyPool {
    fn name(&self) -> &str {
        "budget"
    }
    fn check(&self, r: &AdmissionRequest<'_>) -> Result<(), String> {
        if r.pool.name == self.pool || self.pool == "*" {
            Err(format!("team `{}` is over its monthly budget", r.team))
        } else {
            Ok(())
        }
    }
}

#[test]
fn veto_hooks() {
    let two = || {
        cluster(
            vec![gpu_pool("h", "h100", 1, 4), gpu_pool("x", "a100", 1, 4)],
            vec![queue("a", None, &[("h", 4.0), ("x", 4.0)])],
        )
    };
    table(vec![
        (
            "veto of one pool moves the job to the next",
            two(),
            vec![
                Hook(Box::new(DenyPool { pool: "h" })),
                Submit("j", 0, job("a", 1, 1.0)),
                sched(1, &["j"]),
                RunsOn("j", "x", &["x-0"]),
            ],
        ),
        (
            "veto of every pool keeps it waiting with the reason",
            two(),
            vec![
                Hook(Box::new(DenyPool { pool: "*" })),
                Submit("j", 0, job("a", 1, 1.0)),
                sched(1, &[]),
                Waits("j", WaitKind::Vetoed, "policy `budget` vetoed pool `h`"),
                Waits("j", WaitKind::Vetoed, "over its monthly budget"),
            ],
        ),
    ]);
}

#[test]
fn backfill_respects_the_reservation() {
    let no_preemption = |mut q: QueueSpec| {
        q.within_queue = WithinQueuePreemption::Never;
        q
    };
    // Pool of 4 GPUs; the queue's quota is large, so capacity is what blocks.
    let c = || {
        cluster(
            vec![gpu_pool("p", "h100", 1, 4)],
            vec![no_preemption(queue("a", None, &[("p", 100.0)]))],
        )
    };
    table(vec![
        (
            "short job runs ahead of a blocked head, long one does not",
            c(),
            vec![
                Submit("run", 0, runtime(job("a", 1, 2.0), 100)),
                sched(0, &["run"]),
                Submit("head", 1, prio(runtime(job("a", 1, 4.0), 100), 10)),
                Submit("long", 2, runtime(job("a", 1, 2.0), 500)),
                Submit("unknown", 3, job("a", 1, 2.0)),
                Submit("short", 4, runtime(job("a", 1, 2.0), 50)),
                sched(10, &["short"]),
                Waits("head", WaitKind::Capacity, "pool `p`"),
                Waits("long", WaitKind::Reservation, "would delay job-1"),
                Waits("unknown", WaitKind::Reservation, "from t=100"),
                Finish("short", 60),
                Finish("run", 100),
                sched(100, &["head"]),
            ],
        ),
        (
            "backfill depth 0: nothing passes a blocked head",
            Cluster {
                config: SchedulerConfig {
                    backfill_depth: 0,
                    ..config()
                },
                ..c()
            },
            vec![
                Submit("run", 0, runtime(job("a", 1, 2.0), 100)),
                sched(0, &["run"]),
                Submit("head", 1, prio(runtime(job("a", 1, 4.0), 100), 10)),
                Submit("short", 4, runtime(job("a", 1, 2.0), 50)),
                sched(10, &[]),
                Waits("short", WaitKind::BehindHead, "behind job-1"),
            ],
        ),
        (
            "quota reservation: the head's queue quota is reserved too",
            cluster(
                vec![gpu_pool("p", "h100", 2, 8)],
                vec![no_preemption(queue("a", None, &[("p", 4.0)]))],
            ),
            vec![
                Submit("run", 0, runtime(job("a", 1, 3.0), 100)),
                sched(0, &["run"]),
                Submit("head", 1, prio(runtime(job("a", 1, 4.0), 100), 10)),
                Submit("long", 2, runtime(job("a", 1, 1.0), 500)),
                Submit("short", 3, runtime(job("a", 1, 1.0), 90)),
                sched(10, &["short"]),
                Waits("head", WaitKind::QueueQuota, "nominal quota 4"),
                Waits("long", WaitKind::Reservation, "would delay job-1"),
            ],
        ),
    ]);
}

#[test]
fn aging_lets_a_low_priority_job_through() {
    for (aging, expect_low_by) in [(Some(1_000), Some(5_000)), (None, None)] {
        let mut w = World::new(Cluster {
            config: SchedulerConfig {
                aging_ms_per_level: aging,
                ..config()
            },
            pools: vec![gpu_pool("p", "h100", 1, 1)],
            queues: vec![queue("a", None, &[("p", 1.0)])],
        });
        let low = w.s.submit(prio(job("a", 1, 1.0), 0), 0).unwrap();
        let mut low_at = None;
        let mut running: Option<JobId> = None;
        for round in 0..20u64 {
            let now = round * 1_000;
            if let Some(r) = running.take() {
                w.s.finish(r, now).unwrap();
            }
            // A fresh high-priority job arrives every second.
            w.s.submit(prio(job("a", 1, 1.0), 5), now).unwrap();
            for d in w.s.schedule(now) {
                if let Decision::Admitted { job, .. } = d {
                    if job == low {
                        low_at = Some(now);
                    }
                    running = Some(job);
                }
            }
            if low_at.is_some() {
                break;
            }
        }
        assert_eq!(low_at, expect_low_by, "aging {aging:?}");
    }
}

#[test]
fn workload_class_defaults() {
    let spot = PoolSpec::gpu("spot", "h100", Procurement::Spot);
    let od = PoolSpec::gpu("od", "h100", Procurement::OnDemand);
    let cpu = PoolSpec::cpu("cpu");
    let c = |queues: Vec<QueueSpec>| {
        cluster(
            vec![
                pool_of(spot.clone(), 1, 4),
                pool_of(od.clone(), 1, 4),
                (cpu.clone(), vec![NodeSpec::new("cpu-0", 0, 32, 65536)]),
            ],
            queues,
        )
    };
    let mut q = QueueSpec::new(
        "a",
        "team",
        None,
        vec![
            QuotaSpec::gpus("spot", 4.0),
            QuotaSpec::gpus("od", 4.0),
            QuotaSpec::gpus("cpu", 0.0),
        ],
    );
    let mut spot_only = q.clone();
    spot_only.name = "s".into();
    spot_only.quotas.truncate(1);
    let mut relaxed = spot_only.clone();
    relaxed.name = "r".into();
    relaxed.class_policies.insert(
        WorkloadClass::Inference,
        ClassPolicy {
            spot: SpotRule::Allowed,
            cpu_pools_only: false,
        },
    );
    q.class_policies.clear();
    let tolerant = |mut j: JobSpec, ckpt: bool| {
        j.spot_tolerant = true;
        j.checkpoint_dir = ckpt;
        j
    };
    let class = |queue: &str, k: WorkloadClass, gpus: f64| JobSpec::new(queue, k, 1, gpus);
    table(vec![(
        "class defaults and overrides",
        c(vec![q, spot_only, relaxed]),
        vec![
            Submit(
                "infer",
                0,
                tolerant(class("a", WorkloadClass::Inference, 1.0), true),
            ),
            Submit(
                "train_ckpt",
                0,
                tolerant(class("a", WorkloadClass::Training, 1.0), true),
            ),
            Submit(
                "train_plain",
                0,
                tolerant(class("a", WorkloadClass::Training, 1.0), false),
            ),
            Submit(
                "batch",
                0,
                tolerant(class("a", WorkloadClass::BatchInference, 1.0), false),
            ),
            Submit("rag", 0, class("a", WorkloadClass::Rag, 0.0)),
            Submit(
                "relaxed",
                0,
                tolerant(class("r", WorkloadClass::Inference, 1.0), false),
            ),
            sched(
                1,
                &[
                    "infer",
                    "train_ckpt",
                    "train_plain",
                    "batch",
                    "rag",
                    "relaxed",
                ],
            ),
            RunsOn("infer", "od", &["od-0"]),
            RunsOn("train_ckpt", "spot", &["spot-0"]),
            RunsOn("train_plain", "od", &["od-0"]),
            RunsOn("batch", "spot", &["spot-0"]),
            RunsOn("rag", "cpu", &["cpu-0"]),
            RunsOn("relaxed", "spot", &["spot-0"]),
            Reject(
                tolerant(class("s", WorkloadClass::Inference, 1.0), true),
                "class inference never runs on spot",
            ),
            Reject(
                tolerant(class("s", WorkloadClass::Training, 1.0), false),
                "runs on spot only with a checkpoint directory",
            ),
            Reject(
                class("s", WorkloadClass::Rag, 0.0),
                "class rag runs on CPU pools only",
            ),
        ],
    )]);
}

#[test]
fn spot_interruption_and_requeue_keep_fifo_place() {
    let mut spot = PoolSpec::gpu("spot", "h100", Procurement::Spot);
    spot.class_policies.insert(
        WorkloadClass::Training,
        ClassPolicy {
            spot: SpotRule::Allowed,
            cpu_pools_only: false,
        },
    );
    let ckpt = |mut j: JobSpec| {
        j.spot_tolerant = true;
        j.checkpoint_dir = true;
        j
    };
    table(vec![(
        "interruption evicts the whole gang; requeue keeps the place",
        cluster(
            vec![pool_of(spot, 2, 2)],
            vec![queue("a", None, &[("spot", 8.0)])],
        ),
        vec![
            Submit("gang", 0, ckpt(job("a", 2, 2.0))),
            sched(1, &["gang"]),
            RunsOn("gang", "spot", &["spot-0", "spot-1"]),
            Submit("later", 2, ckpt(job("a", 1, 2.0))),
            sched(2, &[]),
            RemoveNode("spot", "spot-1", &["gang"]),
            State("gang", JobState::Evicted, 1),
            Waits("gang", WaitKind::Evicted, "node `spot-1`"),
            // Only 2 GPUs left: `later` runs; the gang cannot ever fit now but keeps waiting.
            sched(3, &["later"]),
            Requeue("gang"),
            sched(4, &[]),
            Waits("gang", WaitKind::Capacity, "pool `spot`"),
            Finish("later", 5),
            Cancel("gang"),
            State("gang", JobState::Cancelled, 1),
        ],
    )]);
}

#[test]
fn requeued_job_goes_before_later_arrivals() {
    table(vec![(
        "requeue keeps the original submit time",
        one_pool(vec![queue("a", None, &[("p", 2.0)])]),
        vec![
            Submit("low", 0, prio(job("a", 1, 2.0), 1)),
            sched(1, &["low"]),
            Submit("high", 2, prio(job("a", 1, 2.0), 5)),
            Schedule {
                at: 3,
                admitted: &["high"],
                preempted: &["low"],
            },
            Submit("low_later", 4, prio(job("a", 1, 2.0), 1)),
            Requeue("low"),
            Finish("high", 5),
            sched(5, &["low"]),
            State("low", JobState::Admitted, 2),
            Waits("low_later", WaitKind::QueueQuota, "nominal quota 2"),
        ],
    )]);
}

#[test]
fn bad_input_is_named() {
    let mut s = Scheduler::new(config());
    assert_eq!(
        s.add_node("nope", NodeSpec::new("n", 1, 1, 1)).unwrap_err(),
        ConfigError::UnknownPool("nope".into())
    );
    s.add_pool(PoolSpec::gpu("p", "h100", Procurement::OnDemand))
        .unwrap();
    let e = s.add_node("p", NodeSpec::new("n", 0, 1, 1)).unwrap_err();
    assert!(e.to_string().contains("need at least one GPU"), "{e}");
    let e = s
        .add_queue(queue("q", None, &[("p", -1.0)]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "queue `q` quota on pool `p`: GPUs nominal quota must be a finite number >= 0, got -1"
        ),
        "{e}"
    );
    let e = s
        .add_queue(queue("q", None, &[("missing", 1.0)]))
        .unwrap_err();
    assert_eq!(e, ConfigError::UnknownPool("missing".into()));
    s.add_queue(queue("q", None, &[("p", 1.0)])).unwrap();
    let e = s.submit(job("q", 1, 1.0), 0).unwrap_err();
    assert!(
        e.reason
            .contains("pool `p`: a pod needs 1 GPUs, its largest node has 0")
    );
    let e = s.submit(job("other", 1, 1.0), 0).unwrap_err();
    assert!(e.reason.contains("unknown queue `other`"));
    let e = s.submit(job("q", 0, 1.0), 0).unwrap_err();
    assert!(e.reason.contains("pods must be at least 1"));
    assert!(matches!(
        s.finish(JobId(99), 0),
        Err(JobError::UnknownJob(JobId(99)))
    ));
    s.add_node("p", NodeSpec::new("n", 1, 4, 4096)).unwrap();
    let id = s.submit(job("q", 1, 1.0), 0).unwrap();
    let e = s.finish(id, 0).unwrap_err().to_string();
    assert!(e.contains("finish needs Admitted"), "{e}");
    assert!(s.update_queue(queue("zzz", None, &[])).is_err());
}

#[test]
fn update_queue_changes_quota_for_waiting_jobs() {
    let mut w = World::new(one_pool(vec![queue("a", None, &[("p", 1.0)])]));
    let j = w.s.submit(job("a", 1, 2.0), 0).unwrap();
    assert!(w.s.schedule(1).is_empty());
    w.s.update_queue(queue("a", None, &[("p", 2.0)])).unwrap();
    let d = w.s.schedule(2);
    assert!(matches!(&d[..], [Decision::Admitted { job, .. }] if *job == j));
    let e =
        w.s.update_queue(queue("a", None, &[]))
            .unwrap_err()
            .to_string();
    assert!(e.contains("jobs still run on pool `p`"), "{e}");
}

#[test]
fn update_pool_evicts_jobs_it_no_longer_admits_and_rematches_waiting_ones() {
    let mut w = World::new(one_pool(vec![queue("a", None, &[("p", 16.0)])]));
    let tolerant = |mut j: JobSpec| {
        j.spot_tolerant = true;
        j.checkpoint_dir = true;
        j
    };
    let typed = |mut j: JobSpec, t: &str| {
        j.gpu_type = Some(t.into());
        j
    };
    let plain = w.s.submit(job("a", 1, 1.0), 0).unwrap();
    let spot_ok = w.s.submit(tolerant(job("a", 1, 1.0)), 0).unwrap();
    assert_eq!(w.s.schedule(1).len(), 2);
    // A gang that asks for the pool's GPU type waits behind the two.
    let big = w.s.submit(typed(job("a", 2, 8.0), "h100"), 2).unwrap();
    assert!(w.s.schedule(3).is_empty());

    // The pool turns spot: the job that does not tolerate spot is evicted, the other runs on.
    let mut spot = PoolSpec::gpu("p", "h100", Procurement::Spot);
    spot.region = Some("eu-west".into());
    let victims = w.s.update_pool(spot.clone()).unwrap();
    assert_eq!(victims, vec![plain]);
    assert_eq!(w.s.status(plain).unwrap().state, JobState::Evicted);
    let why = w.s.why(plain).unwrap().unwrap();
    assert!(
        why.message
            .contains("pool `p` changed and class training runs on spot only"),
        "{why:?}"
    );
    assert_eq!(w.s.status(spot_ok).unwrap().state, JobState::Admitted);
    // Requeued, it waits: no pool of its queue admits it any more.
    w.s.requeue(plain, 4).unwrap();
    w.s.finish(spot_ok, 5).unwrap();
    let d = w.s.schedule(6);
    assert!(
        d.iter()
            .all(|d| !matches!(d, Decision::Admitted { job, .. } if *job == plain))
    );
    // The accelerator type changes: the waiting h100 gang no longer matches.
    let mut other = spot.clone();
    other.accelerator = Some("b200".into());
    assert!(w.s.update_pool(other).unwrap().is_empty());
    assert!(w.s.schedule(7).is_empty());
    assert_eq!(w.s.status(big).unwrap().state, JobState::Pending);
    let why = w.s.why(big).unwrap().unwrap();
    assert!(why.message.contains("no eligible pool left"), "{why:?}");
    // Back to on-demand h100: the evicted job runs again; the gang of the whole pool is
    // matched to the pool again (and waits for its queue's quota there).
    let back = PoolSpec::gpu("p", "h100", Procurement::OnDemand);
    assert!(w.s.update_pool(back).unwrap().is_empty());
    let admitted: Vec<JobId> =
        w.s.schedule(8)
            .iter()
            .filter_map(|d| match d {
                Decision::Admitted { job, .. } => Some(*job),
                _ => None,
            })
            .collect();
    assert_eq!(admitted, vec![plain]);
    let why = w.s.why(big).unwrap().unwrap();
    assert!(
        why.message.contains("would use 17 GPUs on pool `p`"),
        "{why:?}"
    );
    // A GPU pool cannot become a CPU pool while it has nodes: they have GPUs.
    let e = w.s.update_pool(PoolSpec::cpu("p")).unwrap_err().to_string();
    assert!(
        e.contains("cannot change between a GPU and a CPU pool while it has nodes"),
        "{e}"
    );
    // With its nodes gone (their jobs evicted) it can, and CPU nodes join it.
    let nodes: Vec<String> = (0..2).map(|i| format!("p-{i}")).collect();
    let mut evicted = Vec::new();
    for n in &nodes {
        evicted.extend(w.s.remove_node("p", n).unwrap());
    }
    assert_eq!(evicted, vec![plain]);
    assert!(w.s.update_pool(PoolSpec::cpu("p")).unwrap().is_empty());
    // A GPU node does not fit a CPU pool.
    assert!(
        w.s.add_node("p", NodeSpec::new("p-gpu", 8, 32, 1 << 20))
            .is_err()
    );
    w.s.add_node("p", NodeSpec::new("p-cpu", 0, 32, 1 << 20))
        .unwrap();
    w.s.requeue(plain, 9).unwrap();
    let cpu_job = w.s.submit(job("a", 1, 0.0), 9).unwrap();
    let admitted: Vec<JobId> =
        w.s.schedule(10)
            .iter()
            .filter_map(|d| match d {
                Decision::Admitted { job, .. } => Some(*job),
                _ => None,
            })
            .collect();
    // The CPU job runs; the GPU jobs wait: no node of the pool has a GPU now.
    assert_eq!(admitted, vec![cpu_job]);
    assert_eq!(w.s.status(plain).unwrap().state, JobState::Pending);
    // And back to GPUs the same way.
    evicted = w.s.remove_node("p", "p-cpu").unwrap();
    assert_eq!(evicted, vec![cpu_job]);
    assert!(
        w.s.update_pool(PoolSpec::gpu("p", "h100", Procurement::OnDemand))
            .unwrap()
            .is_empty()
    );
    w.s.add_node("p", NodeSpec::new("p-gpu", 8, 32, 1 << 20))
        .unwrap();
    let admitted = w.s.schedule(11);
    assert!(
        admitted
            .iter()
            .any(|d| matches!(d, Decision::Admitted { job, .. } if *job == plain)),
        "{admitted:?}"
    );
}
