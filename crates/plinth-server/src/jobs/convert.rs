//! From stored Pool, Queue and Job specs to the scheduler's types.

use std::collections::BTreeMap;

use plinth_core::CoreError;
use plinth_sched as sched;
use plinth_types::StoredObject;
use plinth_types::job::{JobSpec, parse_duration};
use plinth_types::spec::{PoolBackend, PoolSpec, QueueSpec};

/// A local-backend pool as the scheduler sees it, its nodes (`<pool>-<i>`), and its
/// procurement. Pools of other backends are not run by this server.
pub fn pool(
    o: &StoredObject,
) -> Option<(
    sched::PoolSpec,
    Vec<sched::NodeSpec>,
    plinth_exec::Procurement,
)> {
    let spec: PoolSpec = serde_json::from_value(o.document.spec.clone()).ok()?;
    if spec.backend != PoolBackend::Local {
        return None;
    }
    let p = spec.procurement;
    let mut s = match &spec.accelerator {
        Some(a) => sched::PoolSpec::gpu(&o.name, &a.kind, p),
        None => sched::PoolSpec::cpu(&o.name),
    };
    s.procurement = p;
    s.region = spec.region.clone();
    s.workload_classes = spec.workload_classes.clone();
    let gpus = spec.accelerator.as_ref().map(|a| a.count).unwrap_or(0);
    let nodes = (0..spec.nodes)
        .map(|i| {
            sched::NodeSpec::new(
                &format!("{}-{i}", o.name),
                gpus,
                spec.cpus_per_node,
                u64::from(spec.memory_gib_per_node) * 1024,
            )
        })
        .collect();
    Some((s, nodes, spec.procurement))
}

/// A queue, with only its quotas on pools the scheduler knows.
pub fn queue(o: &StoredObject, pools: &BTreeMap<String, String>) -> Option<sched::QueueSpec> {
    let spec: QueueSpec = serde_json::from_value(o.document.spec.clone()).ok()?;
    let quotas = spec
        .quotas
        .iter()
        .filter(|q| pools.contains_key(&q.pool))
        .map(|q| sched::QuotaSpec {
            pool: q.pool.clone(),
            gpus: sched::ResourceQuota {
                nominal: q.gpus,
                borrowing_limit: q.borrowing_limit,
                lending_limit: q.lending_limit,
            },
            cpus: q.cpus.map(|c| sched::ResourceQuota::nominal(f64::from(c))),
        })
        .collect();
    let mut s = sched::QueueSpec::new(&o.name, &spec.team, spec.cohort.as_deref(), quotas);
    s.priority = spec.priority;
    s.within_queue = spec.preemption.within_queue;
    s.reclaim_within_cohort = spec.preemption.reclaim_within_cohort;
    s.workload_classes = spec.workload_classes.clone();
    Some(s)
}

/// The scheduler's view of a job: `nodes` pods (a gang) of `gpus`, `cpus` and memory each.
pub fn sched_job(spec: &JobSpec) -> sched::JobSpec {
    let mut j = sched::JobSpec::new(&spec.queue, spec.class, spec.nodes.max(1), spec.gpus);
    j.priority = spec.priority;
    j.cpus_per_pod = spec.cpus;
    j.memory_mib_per_pod = (spec.memory_gib * 1024.0).ceil() as u64;
    j.gpu_type = spec.gpu_type.clone();
    j.spot_tolerant = spec.spot;
    j.checkpoint_dir = spec.checkpoint_dir.is_some();
    // Backfill reservations use the expected runtime: the limit, else (on a simulated
    // server) the declared runtime.
    j.expected_runtime_ms = spec
        .max_runtime
        .as_deref()
        .or(spec.simulated_runtime.as_deref())
        .and_then(|d| parse_duration(d).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    j
}

/// The most pods (nodes) one gang job may ask for.
pub const MAX_NODES: u32 = 1024;

/// Field checks that do not need the scheduler.
pub fn validate(spec: &JobSpec) -> Result<(), CoreError> {
    let bad = |field: &str, m: String| Err(CoreError::invalid(format!("spec.{field}: {m}")));
    if spec.command.is_empty() || spec.command[0].trim().is_empty() {
        return bad("command", "must name a program to run".into());
    }
    if spec.command.iter().any(|a| a.contains('\0')) {
        return bad("command", "must not contain NUL bytes".into());
    }
    if let Err(m) = plinth_config::kinds::validate_name(&spec.team) {
        return bad("team", m);
    }
    if let Err(m) = plinth_config::kinds::validate_name(&spec.queue) {
        return bad("queue", m);
    }
    if spec.nodes == 0 || spec.nodes > MAX_NODES {
        return bad(
            "nodes",
            format!("{} must be between 1 and {MAX_NODES}", spec.nodes),
        );
    }
    if !spec.gpus.is_finite() || spec.gpus < 0.0 || spec.gpus > 1024.0 {
        return bad("gpus", format!("{} must be between 0 and 1024", spec.gpus));
    }
    if spec.gpus > 1.0 && spec.gpus.fract() != 0.0 {
        return bad(
            "gpus",
            format!(
                "{} must be a whole number above 1 (or a share of one GPU below 1)",
                spec.gpus
            ),
        );
    }
    if !spec.cpus.is_finite() || spec.cpus <= 0.0 || spec.cpus > 4096.0 {
        return bad(
            "cpus",
            format!("{} must be more than 0 and at most 4096", spec.cpus),
        );
    }
    if !spec.memory_gib.is_finite() || spec.memory_gib <= 0.0 || spec.memory_gib > 65536.0 {
        return bad(
            "memoryGib",
            format!("{} must be more than 0 and at most 65536", spec.memory_gib),
        );
    }
    if spec.max_retries > 100 {
        return bad(
            "maxRetries",
            format!("{} is more than 100", spec.max_retries),
        );
    }
    for (field, v) in [
        ("maxRuntime", &spec.max_runtime),
        ("idleTimeout", &spec.idle_timeout),
        ("simulatedRuntime", &spec.simulated_runtime),
    ] {
        if let Some(d) = v
            && let Err(m) = parse_duration(d)
        {
            return bad(field, m);
        }
    }
    if let Some(p) = spec.priority
        && !(-1000..=1000).contains(&p)
    {
        return bad(
            "priority",
            format!("must be between -1000 and 1000, got {p}"),
        );
    }
    if let Some(d) = &spec.checkpoint_dir
        && !std::path::Path::new(d).is_absolute()
    {
        return bad("checkpointDir", format!("{d:?} must be an absolute path"));
    }
    for k in spec.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return bad("env", format!("{k:?} is not a valid variable name"));
        }
        if k.starts_with("PLINTH_") || k == "CUDA_VISIBLE_DEVICES" {
            return bad("env", format!("{k} is set by the executor"));
        }
    }
    Ok(())
}
