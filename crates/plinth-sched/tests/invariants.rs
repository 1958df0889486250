//! Randomized (seeded) operations against invariants that must hold after every step: no GPU
//! over-allocated, no queue beyond nominal + borrowing limit, no cohort beyond its quota, no
//! partial gang, usage books equal to what is placed, class rules respected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use plinth_sched::*;

/// splitmix64: tiny, seeded, good enough to shuffle scenarios.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

struct Model {
    pools: Vec<(PoolSpec, Vec<NodeSpec>)>,
    queues: Vec<QueueSpec>,
}

fn build(rng: &mut Rng) -> Model {
    let mut pools = Vec::new();
    for (i, (ty, proc)) in [
        ("h100", Procurement::OnDemand),
        ("a100", Procurement::Reserved),
        ("h100", Procurement::Spot),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("p{i}");
        let spec = PoolSpec::gpu(&name, ty, proc);
        let nodes = (0..1 + rng.below(4))
            .map(|n| {
                NodeSpec::new(
                    &format!("{name}-n{n}"),
                    *rng.pick(&[2, 4, 8]),
                    32,
                    256 * 1024,
                )
            })
            .collect();
        pools.push((spec, nodes));
    }
    let mut queues = Vec::new();
    for i in 0..5 {
        let cohort = match i {
            0..=1 => Some("c0"),
            2..=3 => Some("c1"),
            _ => None,
        };
        let mut quotas = Vec::new();
        for p in 0..3 {
            if rng.below(4) == 0 {
                continue;
            }
            let mut q = QuotaSpec::gpus(&format!("p{p}"), rng.below(9) as f64);
            if rng.below(2) == 0 {
                q.gpus.borrowing_limit = Some(rng.below(5) as f64);
            }
            if rng.below(3) == 0 {
                q.gpus.lending_limit = Some(rng.below(5) as f64);
            }
            quotas.push(q);
        }
        let mut q = QueueSpec::new(&format!("q{i}"), "t", cohort, quotas);
        q.reclaim_within_cohort = *rng.pick(&[
            ReclaimPolicy::Any,
            ReclaimPolicy::LowerPriority,
            ReclaimPolicy::Never,
        ]);
        q.within_queue = *rng.pick(&[
            WithinQueuePreemption::LowerPriority,
            WithinQueuePreemption::Never,
        ]);
        queues.push(q);
    }
    Model { pools, queues }
}

fn check(s: &Scheduler, m: &Model, specs: &HashMap<JobId, JobSpec>, ctx: &str) {
    let mut shares: BTreeMap<(String, String, u32), u32> = BTreeMap::new();
    let mut used: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (id, spec) in specs {
        let st = s.status(*id).unwrap();
        if st.state != JobState::Admitted {
            assert!(
                st.placement.is_empty(),
                "{ctx}: {id} not running but placed"
            );
            continue;
        }
        let pool = st.pool.clone().unwrap();
        assert_eq!(
            st.placement.len() as u32,
            spec.pods,
            "{ctx}: partial gang {id}"
        );
        let want = (spec.gpus_per_pod * 1000.0).round() as u32;
        for pod in &st.placement {
            let got: u32 = pod.gpus.iter().map(|g| g.1).sum();
            assert_eq!(got, want, "{ctx}: {id} pod share");
            for (g, share) in &pod.gpus {
                *shares
                    .entry((pool.clone(), pod.node.clone(), *g))
                    .or_default() += share;
            }
        }
        if pool == "p2" {
            assert_ne!(
                spec.class,
                WorkloadClass::Inference,
                "{ctx}: inference on spot"
            );
        }
        *used.entry((st.queue.clone(), pool)).or_default() +=
            spec.gpus_per_pod * f64::from(spec.pods);
    }
    for ((pool, node, g), total) in &shares {
        assert!(
            *total <= 1000,
            "{ctx}: GPU {g} of {node} in {pool} at {total}"
        );
        let size = m
            .pools
            .iter()
            .flat_map(|p| p.1.iter())
            .find(|n| &n.name == node)
            .unwrap()
            .gpus;
        assert!(*g < size, "{ctx}: GPU index {g} on {node} of {size}");
    }
    let mut cohort_used: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for q in &m.queues {
        for u in s.queue_usage(&q.name).unwrap() {
            let booked = used.get(&(q.name.clone(), u.pool.clone())).copied();
            assert!(
                (u.gpus_used - booked.unwrap_or(0.0)).abs() < 1e-9,
                "{ctx}: books of {} on {}",
                q.name,
                u.pool
            );
            let quota = q.quotas.iter().find(|x| x.pool == u.pool).unwrap();
            if let Some(b) = quota.gpus.borrowing_limit {
                assert!(
                    u.gpus_used <= quota.gpus.nominal + b + 1e-9,
                    "{ctx}: {} over nominal + borrowing limit",
                    q.name
                );
            }
            match &q.cohort {
                None => assert!(
                    u.gpus_used <= quota.gpus.nominal + 1e-9,
                    "{ctx}: {}",
                    q.name
                ),
                Some(c) => {
                    let e = cohort_used.entry((c.clone(), u.pool.clone())).or_default();
                    e.0 += u.gpus_used;
                    e.1 += quota.gpus.nominal;
                }
            }
        }
    }
    for ((c, pool), (u, n)) in cohort_used {
        assert!(u <= n + 1e-9, "{ctx}: cohort {c} on {pool}: {u} > {n}");
    }
}

#[test]
fn random_operations_keep_invariants() {
    let mut preempted_total = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed);
        let m = build(&mut rng);
        let mut s = Scheduler::new(SchedulerConfig {
            aging_ms_per_level: if seed % 2 == 0 { Some(500) } else { None },
            fair_sharing: seed % 3 != 0,
            backfill_depth: (seed % 4) as u32,
        });
        for (p, nodes) in &m.pools {
            s.add_pool(p.clone()).unwrap();
            for n in nodes {
                s.add_node(&p.name, n.clone()).unwrap();
            }
        }
        for q in &m.queues {
            s.add_queue(q.clone()).unwrap();
        }
        let mut specs: HashMap<JobId, JobSpec> = HashMap::new();
        let mut admitted = 0;
        let mut preempted = 0;
        for step in 0..400u64 {
            let now = step * 10;
            let ctx = format!("seed {seed} step {step}");
            match rng.below(10) {
                0..=4 => {
                    let q = rng.below(m.queues.len() as u64);
                    let class = *rng.pick(&WorkloadClass::ALL[..4]);
                    let mut j = JobSpec::new(
                        &format!("q{q}"),
                        class,
                        1 + rng.below(3) as u32,
                        *rng.pick(&[0.25, 0.5, 1.0, 2.0, 4.0]),
                    );
                    j.priority = Some(rng.below(6) as i32);
                    j.spot_tolerant = rng.below(2) == 0;
                    j.checkpoint_dir = rng.below(2) == 0;
                    if rng.below(2) == 0 {
                        j.expected_runtime_ms = Some(10 + rng.below(200));
                    }
                    if rng.below(5) == 0 {
                        j.gpu_type = Some(rng.pick(&["h100", "a100"]).to_string());
                    }
                    if let Ok(id) = s.submit(j.clone(), now) {
                        specs.insert(id, j);
                    }
                }
                5..=7 => {
                    for d in s.schedule(now) {
                        match d {
                            Decision::Admitted { .. } => admitted += 1,
                            Decision::Preempted { job, .. } => {
                                preempted += 1;
                                if rng.below(2) == 0 {
                                    s.requeue(job, now).unwrap();
                                }
                            }
                        }
                    }
                    check(&s, &m, &specs, &ctx);
                }
                8 => {
                    let ids: Vec<JobId> = specs.keys().copied().collect();
                    for id in ids {
                        let state = s.status(id).unwrap().state;
                        if state == JobState::Admitted && rng.below(3) == 0 {
                            s.finish(id, now).unwrap();
                        } else if state == JobState::Evicted && rng.below(2) == 0 {
                            s.requeue(id, now).unwrap();
                        } else if state == JobState::Pending && rng.below(20) == 0 {
                            s.cancel(id, now).unwrap();
                        }
                    }
                }
                _ => {
                    // Spot churn: a node of the spot pool goes away and comes back.
                    let (pool, nodes) = &m.pools[2];
                    let n = rng.pick(nodes).clone();
                    if let Ok(evicted) = s.remove_node(&pool.name, &n.name) {
                        for id in evicted {
                            assert_eq!(s.status(id).unwrap().state, JobState::Evicted);
                        }
                    } else {
                        s.add_node(&pool.name, n).unwrap();
                    }
                    check(&s, &m, &specs, &ctx);
                }
            }
        }
        assert!(admitted > 0, "seed {seed}: nothing admitted");
        preempted_total += preempted;
    }
    assert!(preempted_total > 0, "the runs should exercise preemption");
}

#[test]
fn waiting_jobs_always_have_a_reason() {
    let mut rng = Rng(7);
    let m = build(&mut rng);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for (p, nodes) in &m.pools {
        s.add_pool(p.clone()).unwrap();
        for n in nodes {
            s.add_node(&p.name, n.clone()).unwrap();
        }
    }
    for q in &m.queues {
        s.add_queue(q.clone()).unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..200u64 {
        let q = &m.queues[(i % m.queues.len() as u64) as usize];
        if let Ok(id) = s.submit(JobSpec::new(&q.name, WorkloadClass::Training, 1, 1.0), i) {
            ids.push(id);
        }
    }
    s.schedule(1_000);
    let mut waiting = 0;
    for id in ids {
        let st = s.status(id).unwrap();
        match st.state {
            JobState::Pending => {
                waiting += 1;
                let w = st.wait.expect("a pending job has a reason");
                assert_ne!(w.kind, WaitKind::NotConsidered, "{id}: {}", w.message);
                assert!(!w.message.is_empty());
            }
            JobState::Admitted => assert!(st.wait.is_none()),
            JobState::Evicted => {
                let w = st.wait.expect("an evicted job has a reason");
                assert_eq!(w.kind, WaitKind::Evicted, "{id}: {}", w.message);
            }
            other => panic!("{id} in {other:?}"),
        }
    }
    assert!(waiting > 0, "the scenario should leave jobs waiting");
}
