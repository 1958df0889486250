//! `bench/scheduler`: replays Kueue's scheduler performance workloads through plinth-sched with
//! a virtual clock, then measures admission throughput with 100,000 pending jobs.
//!
//! ```text
//! cargo run --release -p plinth-sched --example bench -- \
//!     --baseline ../shared/bench/scheduler-kueue-baseline.yaml \
//!     --large ../shared/bench/scheduler-kueue-large-scale.yaml \
//!     --out target/bench/scheduler.json
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use plinth_sched::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Workload {
    cohorts: u32,
    queues_per_cohort: u32,
    queue: QueueShape,
    streams: Vec<Stream>,
    kueue_measured: Measured,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueShape {
    nominal_quota: f64,
    borrowing_limit: f64,
    reclaim_within_cohort: ReclaimPolicy,
    preempt_within_queue: WithinQueuePreemption,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stream {
    class: String,
    count: u32,
    interval_ms: u64,
    runtime_ms: u64,
    priority: i32,
    request: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Measured {
    wall_ms: u64,
    avg_time_to_admission_ms: BTreeMap<String, f64>,
    avg_queue_usage_percent: f64,
}

#[derive(Debug, Serialize)]
struct ReplayResult {
    name: String,
    workloads: usize,
    queues: u32,
    gpus: u64,
    lower_bound_ms: u64,
    wall_ms: u64,
    avg_time_to_admission_ms: BTreeMap<String, f64>,
    avg_queue_usage_percent: f64,
    preemptions: u64,
    admissions: u64,
    scheduler_cpu_ms: f64,
    replay_cpu_ms: f64,
    replay_wall_ms: f64,
    kueue: Measured,
}

#[derive(Debug, Serialize)]
struct ThroughputResult {
    queues: u32,
    cohorts: u32,
    gpus: u64,
    bulk_pending_before: usize,
    bulk_admissions: u64,
    bulk_ms: f64,
    bulk_wall_ms: f64,
    bulk_admissions_per_s: f64,
    steady_pending: usize,
    steady_admissions: u64,
    steady_decisions: u64,
    steady_schedule_ms: f64,
    steady_schedule_wall_ms: f64,
    steady_preemptions: u64,
    steady_admissions_per_s: f64,
    steady_us_per_decision: f64,
    steady_us_per_admission: f64,
    slurm_documented_jobs_per_s: f64,
}

const GPUS_PER_NODE: u32 = 8;

/// CPU time of this thread in seconds (Linux schedstat, nanoseconds), so that other work on a
/// shared machine does not count; wall time where it is not available.
struct Clock {
    wall: Instant,
    cpu: Option<u64>,
}

fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: thread_cpu_ns(),
        }
    }
    /// (cpu seconds, wall seconds)
    fn elapsed(&self) -> (f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = match (self.cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / 1e9,
            _ => wall,
        };
        (cpu, wall)
    }
}

fn build_cluster(w: &Workload) -> Result<(Scheduler, Vec<String>, u64), String> {
    let mut s = Scheduler::new(SchedulerConfig {
        aging_ms_per_level: None,
        fair_sharing: true,
        backfill_depth: 8,
    });
    let queues = w.cohorts * w.queues_per_cohort;
    let gpus = (f64::from(queues) * w.queue.nominal_quota).round() as u64;
    s.add_pool(PoolSpec::gpu(
        "gpu",
        "nvidia-h100-80gb",
        Procurement::OnDemand,
    ))
    .map_err(|e| e.to_string())?;
    let nodes = gpus.div_ceil(u64::from(GPUS_PER_NODE));
    for n in 0..nodes {
        let g = (gpus - n * u64::from(GPUS_PER_NODE)).min(u64::from(GPUS_PER_NODE)) as u32;
        s.add_node("gpu", NodeSpec::new(&format!("n{n}"), g, 256, 2 << 20))
            .map_err(|e| e.to_string())?;
    }
    let mut names = Vec::new();
    for c in 0..w.cohorts {
        for i in 0..w.queues_per_cohort {
            let name = format!("c{c}-q{i}");
            let mut quota = QuotaSpec::gpus("gpu", w.queue.nominal_quota);
            quota.gpus.borrowing_limit = Some(w.queue.borrowing_limit);
            let mut q = QueueSpec::new(&name, "bench", Some(&format!("c{c}")), vec![quota]);
            q.reclaim_within_cohort = w.queue.reclaim_within_cohort;
            q.within_queue = w.queue.preempt_within_queue;
            s.add_queue(q).map_err(|e| e.to_string())?;
            names.push(name);
        }
    }
    Ok((s, names, gpus))
}

fn job(queue: &str, pods: u32, runtime_ms: u64, priority: i32) -> JobSpec {
    let mut j = JobSpec::new(queue, WorkloadClass::BatchInference, pods, 1.0);
    j.cpus_per_pod = 0.0;
    j.memory_mib_per_pod = 0;
    j.priority = Some(priority);
    j.expected_runtime_ms = Some(runtime_ms);
    j
}

fn replay(name: &str, w: &Workload) -> Result<ReplayResult, String> {
    let (mut s, queues, gpus) = build_cluster(w)?;
    // Arrivals: every queue receives every stream, one workload per interval, from t=0.
    let mut arrivals: Vec<(u64, usize, usize)> = Vec::new();
    for q in 0..queues.len() {
        for (k, st) in w.streams.iter().enumerate() {
            for i in 0..u64::from(st.count) {
                arrivals.push((i * st.interval_ms, q, k));
            }
        }
    }
    arrivals.sort_unstable();
    let work: u64 = w
        .streams
        .iter()
        .map(|st| u64::from(st.count) * st.runtime_ms * u64::from(st.request))
        .sum::<u64>()
        * queues.len() as u64;
    let lower_bound_ms = work.div_ceil(gpus);

    let started = Clock::start();
    let mut sched_time = 0.0f64;
    let mut meta: HashMap<JobId, (usize, u64)> = HashMap::new(); // stream, submitted
    let mut admitted_at: HashMap<JobId, u64> = HashMap::new();
    let mut running_end: HashMap<JobId, u64> = HashMap::new();
    let mut ends: BinaryHeap<Reverse<(u64, JobId)>> = BinaryHeap::new();
    let mut used: u64 = 0;
    let mut area: u128 = 0; // GPU·ms
    let mut last_t = 0u64;
    let mut next = 0usize;
    let mut preemptions = 0u64;
    let mut admissions = 0u64;
    let mut wall = 0u64;
    loop {
        let ta = arrivals.get(next).map(|a| a.0);
        let tf = ends.peek().map(|e| e.0.0);
        let t = match (ta, tf) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(f)) => f,
            (Some(a), Some(f)) => a.min(f),
        };
        area += u128::from(used) * u128::from(t - last_t);
        last_t = t;
        while let Some(Reverse((e, id))) = ends.peek().copied() {
            if e != t {
                break;
            }
            ends.pop();
            if running_end.get(&id) == Some(&e) {
                running_end.remove(&id);
                let st = &w.streams[meta[&id].0];
                used -= u64::from(st.request);
                s.finish(id, t).map_err(|e| e.to_string())?;
                wall = wall.max(t);
            }
        }
        while let Some(&(at, q, k)) = arrivals.get(next) {
            if at != t {
                break;
            }
            next += 1;
            let st = &w.streams[k];
            let id = s
                .submit(job(&queues[q], st.request, st.runtime_ms, st.priority), t)
                .map_err(|e| format!("submit: {e}"))?;
            meta.insert(id, (k, t));
        }
        let t0 = Clock::start();
        let decisions = s.schedule(t);
        sched_time += t0.elapsed().0;
        for d in decisions {
            match d {
                Decision::Admitted { job, .. } => {
                    admissions += 1;
                    let st = &w.streams[meta[&job].0];
                    used += u64::from(st.request);
                    admitted_at.insert(job, t);
                    running_end.insert(job, t + st.runtime_ms);
                    ends.push(Reverse((t + st.runtime_ms, job)));
                }
                Decision::Preempted { job, .. } => {
                    preemptions += 1;
                    let st = &w.streams[meta[&job].0];
                    used -= u64::from(st.request);
                    running_end.remove(&job);
                    // The executor stops it at once; it goes back to its queue.
                    s.requeue(job, t).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    let (replay_cpu, replay_wall) = started.elapsed();
    let replay_cpu_ms = replay_cpu * 1e3;
    if meta.len() != arrivals.len() || admitted_at.len() != arrivals.len() {
        return Err(format!(
            "{name}: {} of {} workloads were admitted",
            admitted_at.len(),
            arrivals.len()
        ));
    }
    let mut per_class: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for (id, (k, submitted)) in &meta {
        let e = per_class.entry(w.streams[*k].class.clone()).or_default();
        e.0 += (admitted_at[id] - submitted) as f64;
        e.1 += 1;
    }
    Ok(ReplayResult {
        name: name.to_string(),
        workloads: arrivals.len(),
        queues: queues.len() as u32,
        gpus,
        lower_bound_ms,
        wall_ms: wall,
        avg_time_to_admission_ms: per_class
            .into_iter()
            .map(|(k, (sum, n))| (k, sum / n as f64))
            .collect(),
        avg_queue_usage_percent: if wall == 0 {
            0.0
        } else {
            area as f64 / (gpus as f64 * wall as f64) * 100.0
        },
        preemptions,
        admissions,
        scheduler_cpu_ms: sched_time * 1e3,
        replay_cpu_ms,
        replay_wall_ms: replay_wall * 1e3,
        kueue: w.kueue_measured.clone(),
    })
}

/// splitmix64, seeded: the same jobs every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn throughput() -> Result<ThroughputResult, String> {
    // 1,000 queues in 10 cohorts; 50 GPUs nominal each (50,000 GPUs). 150,000 one-GPU jobs:
    // a bulk schedule admits 50,000 of them, then steady rounds keep 100,000 pending.
    let w = Workload {
        cohorts: 10,
        queues_per_cohort: 100,
        queue: QueueShape {
            nominal_quota: 50.0,
            borrowing_limit: 50.0,
            reclaim_within_cohort: ReclaimPolicy::Any,
            preempt_within_queue: WithinQueuePreemption::LowerPriority,
        },
        streams: Vec::new(),
        kueue_measured: Measured {
            wall_ms: 0,
            avg_time_to_admission_ms: BTreeMap::new(),
            avg_queue_usage_percent: 0.0,
        },
    };
    let (mut s, queues, gpus) = build_cluster(&w)?;
    let mut rng = Rng(42);
    let mut now = 0u64;
    let submit = |s: &mut Scheduler, rng: &mut Rng, now: u64, n: usize| -> Result<(), String> {
        for i in 0..n {
            let q = &queues[(rng.next() % queues.len() as u64) as usize];
            let _ = i;
            s.submit(job(q, 1, 60_000, (rng.next() % 4) as i32), now)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    submit(&mut s, &mut rng, now, 150_000)?;
    let t0 = Clock::start();
    let mut running: Vec<JobId> = Vec::new();
    for d in s.schedule(now) {
        if let Decision::Admitted { job, .. } = d {
            running.push(job);
        }
    }
    let (bulk, bulk_wall) = t0.elapsed();
    let bulk_admissions = running.len() as u64;
    let pending: usize = queues.iter().map(|q| s.pending_len(q).unwrap_or(0)).sum();

    let mut sched_s = 0.0;
    let mut sched_wall = 0.0;
    let mut preemptions = 0u64;
    let mut admitted = 0u64;
    let decisions_before = s.decisions_total();
    for _round in 0..100 {
        now += 1_000;
        for _ in 0..1_000 {
            if running.is_empty() {
                break;
            }
            let i = (rng.next() % running.len() as u64) as usize;
            let id = running.swap_remove(i);
            s.finish(id, now).map_err(|e| e.to_string())?;
        }
        submit(&mut s, &mut rng, now, 1_000)?;
        let t = Clock::start();
        let decisions = s.schedule(now);
        let (cpu, wall) = t.elapsed();
        sched_s += cpu;
        sched_wall += wall;
        for d in decisions {
            match d {
                Decision::Admitted { job, .. } => {
                    admitted += 1;
                    running.push(job);
                }
                Decision::Preempted { job, .. } => {
                    preemptions += 1;
                    running.retain(|r| *r != job);
                    s.requeue(job, now).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    let decisions = s.decisions_total() - decisions_before;
    Ok(ThroughputResult {
        queues: 1_000,
        cohorts: 10,
        gpus,
        bulk_pending_before: 150_000,
        bulk_admissions,
        bulk_ms: bulk * 1e3,
        bulk_wall_ms: bulk_wall * 1e3,
        bulk_admissions_per_s: bulk_admissions as f64 / bulk,
        steady_pending: pending,
        steady_admissions: admitted,
        steady_decisions: decisions,
        steady_schedule_ms: sched_s * 1e3,
        steady_schedule_wall_ms: sched_wall * 1e3,
        steady_preemptions: preemptions,
        steady_admissions_per_s: admitted as f64 / sched_s,
        steady_us_per_decision: sched_s * 1e6 / decisions.max(1) as f64,
        steady_us_per_admission: sched_s * 1e6 / admitted.max(1) as f64,
        slurm_documented_jobs_per_s: 500.0,
    })
}

fn load(path: &str) -> Result<Workload, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    yaml_serde::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

fn report(replays: &[ReplayResult], tp: &ThroughputResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Replay of Kueue's scheduler performance workloads\n"
    );
    let _ = writeln!(
        out,
        "| workload | workloads | queues | GPUs | lower bound (s) | Plinth wall (s) | ×lower bound | Kueue wall (s) | Kueue / Plinth | Plinth usage % | Kueue usage % | preemptions | scheduler CPU (ms) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in replays {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.3} | {:.1} | {:.0}× | {:.1} | {:.1} | {} | {:.0} |",
            r.name,
            r.workloads,
            r.queues,
            r.gpus,
            r.lower_bound_ms as f64 / 1e3,
            r.wall_ms as f64 / 1e3,
            r.wall_ms as f64 / r.lower_bound_ms as f64,
            r.kueue.wall_ms as f64 / 1e3,
            r.kueue.wall_ms as f64 / r.wall_ms.max(1) as f64,
            r.avg_queue_usage_percent,
            r.kueue.avg_queue_usage_percent,
            r.preemptions,
            r.scheduler_cpu_ms,
        );
    }
    let _ = writeln!(out, "\nAverage time to admission (s), per class:\n");
    let _ = writeln!(out, "| workload | class | Plinth | Kueue |");
    let _ = writeln!(out, "|---|---|---:|---:|");
    for r in replays {
        for (class, ms) in &r.avg_time_to_admission_ms {
            let k = r.kueue.avg_time_to_admission_ms.get(class).copied();
            let _ = writeln!(
                out,
                "| {} | {class} | {:.2} | {} |",
                r.name,
                ms / 1e3,
                k.map_or("-".to_string(), |k| format!("{:.1}", k / 1e3))
            );
        }
    }
    let _ = writeln!(
        out,
        "\n### Admission throughput ({} queues, {} cohorts, {} GPUs)\n",
        tp.queues, tp.cohorts, tp.gpus
    );
    let _ = writeln!(
        out,
        "| phase | pending | admissions | preemptions | admissions/s | µs per decision | µs per admission | Slurm (documented) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| bulk: one schedule call | {} | {} | 0 | {:.0} | - | {:.2} | 500 jobs/s |",
        tp.bulk_pending_before,
        tp.bulk_admissions,
        tp.bulk_admissions_per_s,
        tp.bulk_ms * 1e3 / tp.bulk_admissions.max(1) as f64,
    );
    let _ = writeln!(
        out,
        "| steady: 100 × (1,000 finish, 1,000 submit, schedule) | {} | {} | {} | {:.0} | {:.2} | {:.2} | 500 jobs/s |",
        tp.steady_pending,
        tp.steady_admissions,
        tp.steady_preemptions,
        tp.steady_admissions_per_s,
        tp.steady_us_per_decision,
        tp.steady_us_per_admission,
    );
    let _ = writeln!(
        out,
        "\nTimes are CPU time of the benchmark thread (wall: bulk {:.0} ms, steady schedule {:.0} ms).",
        tp.bulk_wall_ms, tp.steady_schedule_wall_ms
    );
    out
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut baseline = "../shared/bench/scheduler-kueue-baseline.yaml".to_string();
    let mut large = "../shared/bench/scheduler-kueue-large-scale.yaml".to_string();
    let mut out = "target/bench/scheduler.json".to_string();
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--baseline" => baseline = value()?,
            "--large" => large = value()?,
            "--out" => out = value()?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let mut replays = Vec::new();
    for (name, path) in [("baseline", &baseline), ("large-scale", &large)] {
        let w = load(path)?;
        eprintln!("replaying {name} ({path})...");
        replays.push(replay(name, &w)?);
    }
    eprintln!("throughput...");
    let tp = throughput()?;
    let table = report(&replays, &tp);
    println!("{table}");
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::json!({ "replays": replays, "throughput": tp });
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(&out, text).map_err(|e| format!("{out}: {e}"))?;
    eprintln!("wrote {out}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
