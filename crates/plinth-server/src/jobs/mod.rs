//! The job controller: the scheduler (`plinth-sched`) fed from the stored Pools, Queues and Jobs,
//! and the local executor (`plinth-exec`) running admitted jobs as supervised processes.
//!
//! Every state change of a job is one write of its `Job` object (with a precondition on its
//! generation) plus, for submit, cancel, admit and finish, an audit event. Waiting jobs are
//! re-submitted on start with their original submit times, and running attempts are adopted
//! through `Executor::recover`, so a server that is killed loses no accepted job.

pub mod api;
pub mod apply;
mod approval;
mod convert;
mod holds;
mod runner;

pub use holds::{HoldRequest, HoldState};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use plinth_config::ExecutorKind;
use plinth_config::kinds::JOB_KIND;
use plinth_core::{CoreError, Platform, authorize_read};
use plinth_exec::{
    AttemptId, AttemptSpec, EndReason, ExecError, Executor, ExitKind, GpuSlot, IdlePolicy,
    LogStream, Outcome, PodInfo, RecoveredState, StopReason, SupervisorProgram,
};
use plinth_sched::{Decision, JobId, Scheduler, SchedulerConfig};
use plinth_store::{Batch, Op, Precondition};
use plinth_types::audit::NewAuditEvent;
use plinth_types::job::{
    Attempt, AttemptPod, Job, JobRecord, JobSpec, JobState, JobStatus, SubmitJobRequest,
    parse_duration,
};
use plinth_types::spec::Procurement;
use plinth_types::{API_VERSION, Document, Identity, ObjectMeta, Role, StoredObject};
use sha2::Digest as _;
use tokio::sync::{Mutex, Notify};

use crate::metrics::Metrics;
use runner::{Runner, SimExec, pod_id};

const TICK: Duration = Duration::from_millis(500);
/// The least time from the start of one controller pass to the start of the next.
const MIN_PASS: Duration = Duration::from_millis(10);
/// A waiting job's stored reason is rewritten at most this often (its first one after a pass).
const REASON_EVERY_MS: u64 = 5_000;
/// A pending job's wait reason is stored once it has waited this long (reads show the live
/// reason before that).
const REASON_STORE_AFTER_MS: u64 = 5_000;
const STOP_GRACE: Duration = Duration::from_secs(5);
const SYSTEM: &str = "system:jobs";
const CHAOS: &str = "system:chaos";
/// The most jobs one `POST /api/v1/jobs:batch` may carry.
pub const MAX_BATCH: usize = 10_000;

/// How the controller runs: which executor, and the chaos interruption rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub executor: ExecutorKind,
    /// Random interruptions per spot node per hour (0: none).
    pub chaos_spot_interrupts_per_hour: f64,
    pub chaos_seed: Option<u64>,
    /// Jobs estimated above this amount wait for approval (server config).
    pub cost_approval_threshold: Option<f64>,
}

impl Options {
    pub fn from_config(c: &plinth_config::ServerConfig) -> Options {
        Options {
            executor: c.executor,
            chaos_spot_interrupts_per_hour: c.chaos_spot_interrupts_per_hour,
            chaos_seed: c.chaos_seed,
            cost_approval_threshold: c.cost_approval_threshold,
        }
    }
}

/// One staged write of a job (and its audit event), committed by the next flush.
struct Write {
    name: String,
    op: Op,
    event: Option<NewAuditEvent>,
}

/// splitmix64: the chaos interruptions' random numbers (seeded, so a run can be repeated).
struct Chaos {
    per_hour: f64,
    state: u64,
    last: Instant,
}

impl Chaos {
    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Tracked {
    team: String,
    generation: i64,
    created_at: String,
    record: JobRecord,
    sched: Option<JobId>,
    /// When the wait-reason refresh last stored its reason (ms; 0: never).
    reason_ms: u64,
    /// The canonical JSON of `record.spec`, encoded at the first write (a spec never changes).
    spec_json: Option<String>,
}

struct Ctl {
    sched: Scheduler,
    /// Digest of each Pool/Queue object already given to the scheduler.
    pools: BTreeMap<String, String>,
    queues: BTreeMap<String, String>,
    /// Procurement of each scheduled pool, for usage records.
    procurement: BTreeMap<String, plinth_exec::Procurement>,
    /// Nodes of each scheduled pool, to put a replacement in after an interruption.
    nodes: BTreeMap<String, Vec<plinth_sched::NodeSpec>>,
    jobs: BTreeMap<String, Tracked>,
    by_id: HashMap<JobId, String>,
    /// When Pools and Queues were last read from the store and wait reasons last refreshed.
    last_full: Option<Instant>,
    /// The team of every stored Queue, as last read (also those the scheduler cannot use).
    queue_teams: HashMap<String, String>,
    /// Capacity held by replicas (see `holds`), by holder, and their scheduler ids.
    holds: BTreeMap<String, holds::Hold>,
    hold_ids: HashMap<JobId, String>,
    /// Scheduler ids of submitted jobs whose transaction is being committed (they are not in
    /// `jobs` yet), and the admissions the scheduler gave some of them meanwhile: their
    /// attempts start once the jobs are stored.
    committing: std::collections::HashSet<JobId>,
    deferred: HashMap<JobId, (String, Vec<plinth_sched::PodPlacement>)>,
}

/// The controller, shared by the API handlers and its own loop.
pub struct Jobs {
    platform: Platform,
    exec: Runner,
    ctl: Mutex<Ctl>,
    /// Writes staged under the `ctl` lock, committed together by `flush` (still under it).
    writes: std::sync::Mutex<Vec<Write>>,
    /// Held by every commit of job writes, and taken while `ctl` is still held: transactions
    /// reach the store in the order their changes were made, even when a batch submission
    /// commits after letting go of `ctl`.
    commit_order: Mutex<()>,
    chaos: Option<std::sync::Mutex<Chaos>>,
    wake: Notify,
    metrics: Arc<Metrics>,
    /// Usage records of ended attempts, stored in the background (see `crate::cost`).
    usage: crate::cost::UsageSink,
    /// Approvals, budget blocks and GPU-hour quotas (see `crate::cost`).
    guard: crate::cost::Guard,
    /// True once stored jobs and running attempts are recovered (holds wait for it, so the
    /// pools and queues are known and adopted attempts have their resources first).
    recovered: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("executor", &self.exec.describe())
            .finish()
    }
}

/// The canonical JSON (compact, keys sorted) of a job's spec.
fn canonical_spec(spec: &JobSpec) -> Result<String, CoreError> {
    serde_json::to_string(&serde_json::to_value(spec).map_err(internal)?).map_err(internal)
}

/// A job's stored document, as the canonical JSON `encode_document` would give for it, and its
/// digest, built from the spec's JSON (encoded once per job) and the status, whose fields are
/// declared in sorted order so that it encodes canonically without a detour through a
/// `serde_json::Value` (`job_documents_encode_canonically` holds both to it).
fn encode_job(
    name: &str,
    spec_json: &str,
    status: &JobStatus,
) -> Result<(String, String), CoreError> {
    let status = serde_json::to_string(status).map_err(internal)?;
    let name = serde_json::to_string(name).map_err(internal)?;
    let api = serde_json::to_string(API_VERSION).map_err(internal)?;
    let mut json = String::with_capacity(spec_json.len() + status.len() + name.len() + 80);
    json.push_str("{\"apiVersion\":");
    json.push_str(&api);
    json.push_str(",\"kind\":\"");
    json.push_str(JOB_KIND);
    json.push_str("\",\"metadata\":{\"name\":");
    json.push_str(&name);
    json.push_str("},\"spec\":{\"spec\":");
    json.push_str(spec_json);
    json.push_str(",\"status\":");
    json.push_str(&status);
    json.push_str("}}");
    let digest = hex::encode(sha2::Sha256::digest(json.as_bytes()));
    Ok((json, digest))
}

/// A placement's GPUs (index, thousandths of it) as the executor's slots.
fn gpu_slots(gpus: &[(u32, u32)]) -> Vec<GpuSlot> {
    gpus.iter()
        .map(|&(i, milli)| {
            if milli >= 1000 {
                GpuSlot::whole(i)
            } else {
                GpuSlot {
                    index: i,
                    fraction: Some(f64::from(milli) / 1000.0),
                }
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

fn now_str() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn internal(e: impl std::fmt::Display) -> CoreError {
    CoreError::Internal(e.to_string())
}

fn describe_exit(exit: &ExitKind) -> String {
    match exit {
        ExitKind::Code(c) => format!("code {c}"),
        ExitKind::Signal(s) => format!("signal {s}"),
        ExitKind::ExecFailed(m) => format!("exec error: {m}"),
        ExitKind::Lost => "lost".into(),
    }
}

/// Makes a job name from its command: `<program>-<6 hex>`.
fn generate_name(command: &[String]) -> String {
    let base: String = command
        .first()
        .map(|c| c.rsplit('/').next().unwrap_or(c))
        .unwrap_or("job")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(40)
        .collect();
    let base = if base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base
    } else {
        format!("job{base}")
    };
    // The tail of a v7 id is random.
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{base}-{}", &id[id.len() - 6..])
}

impl Jobs {
    /// Opens the executor under `<data_dir>/exec`; the supervisor is this very binary with its
    /// hidden `exec-supervisor` subcommand.
    /// With `ExecutorKind::Simulated` no process is ever started (benchmarks only).
    pub fn new(
        platform: Platform,
        root: std::path::PathBuf,
        metrics: Arc<Metrics>,
        options: Options,
    ) -> Result<Arc<Jobs>, String> {
        let exec = match options.executor {
            ExecutorKind::Local => {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot locate this program for the supervisor: {e}"))?;
                Runner::Local(
                    Executor::new(
                        root,
                        SupervisorProgram::new(exe).with_args(["exec-supervisor"]),
                    )
                    .map_err(|e| e.to_string())?,
                )
            }
            ExecutorKind::Simulated => {
                tracing::warn!(
                    "job controller: simulated executor (benchmarks only): jobs hold their resources for their simulatedRuntime, no process runs"
                );
                Runner::Simulated(SimExec::default())
            }
        };
        let chaos = (options.chaos_spot_interrupts_per_hour > 0.0).then(|| {
            let seed = options.chaos_seed.unwrap_or_else(now_ms);
            tracing::warn!(
                per_hour = options.chaos_spot_interrupts_per_hour,
                seed,
                "job controller: chaos: random spot interruptions"
            );
            std::sync::Mutex::new(Chaos {
                per_hour: options.chaos_spot_interrupts_per_hour,
                state: seed,
                last: Instant::now(),
            })
        });
        let usage = crate::cost::UsageSink::new(platform.store().clone());
        let guard =
            crate::cost::Guard::start(platform.store().clone(), options.cost_approval_threshold);
        let mut sched = Scheduler::new(SchedulerConfig::default());
        sched.add_hook(guard.quota_hook());
        Ok(Arc::new(Jobs {
            platform,
            exec,
            writes: std::sync::Mutex::new(Vec::new()),
            commit_order: Mutex::new(()),
            chaos,
            ctl: Mutex::new(Ctl {
                sched,
                pools: BTreeMap::new(),
                queues: BTreeMap::new(),
                procurement: BTreeMap::new(),
                nodes: BTreeMap::new(),
                jobs: BTreeMap::new(),
                by_id: HashMap::new(),
                last_full: None,
                queue_teams: HashMap::new(),
                holds: BTreeMap::new(),
                hold_ids: HashMap::new(),
                committing: Default::default(),
                deferred: HashMap::new(),
            }),
            wake: Notify::new(),
            metrics,
            usage,
            guard,
            recovered: tokio::sync::watch::Sender::new(false),
        }))
    }

    async fn wait_recovered(&self) {
        let mut rx = self.recovered.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Recovers stored jobs and running attempts, then runs the loop until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = me.recover().await {
                tracing::error!(error = %e, "job controller: recovery failed");
            }
            me.recovered.send_replace(true);
            me.backfill_usage().await;
            loop {
                let started = Instant::now();
                if let Err(e) = me.tick().await {
                    tracing::warn!(error = %e, "job controller: tick failed");
                }
                me.chaos_step().await;
                // Wake for a submission or cancel, when a simulated attempt's runtime is over,
                // or after TICK at the latest; but start passes MIN_PASS apart at the least, so
                // that under load one pass (and its one transaction) takes every change of that
                // stretch instead of one each.
                let wait = me
                    .exec
                    .next_end()
                    .map(|t| t.saturating_duration_since(Instant::now()).min(TICK))
                    .unwrap_or(TICK);
                let floor = MIN_PASS.saturating_sub(started.elapsed());
                if !floor.is_zero() {
                    tokio::time::sleep(floor).await;
                }
                let _ = tokio::time::timeout(wait.saturating_sub(floor), me.wake.notified()).await;
            }
        });
    }

    /// Gives new or changed Pools and Queues to the scheduler.
    async fn sync_config(&self, ctl: &mut Ctl) -> Result<(), CoreError> {
        let store = self.platform.store();
        let mut pool_added = false;
        for p in store.list_objects("Pool").await? {
            match ctl.pools.get(&p.name) {
                Some(d) if *d == p.digest => continue,
                Some(_) => {
                    // A changed pool: its type, procurement, region, labels and classes apply
                    // at once (jobs it no longer admits are stopped and wait again), and its
                    // nodes follow the new spec.
                    if ctl.nodes.contains_key(&p.name)
                        && let Some((spec, nodes, proc_)) = convert::pool(&p)
                    {
                        // Between GPU and CPU: every node changes, so the old ones leave
                        // first (their jobs wait again) and the new ones join below.
                        let was_gpu = ctl
                            .nodes
                            .get(&p.name)
                            .and_then(|n| n.first())
                            .map(|n| n.gpus > 0);
                        if was_gpu.is_some_and(|g| g != spec.accelerator.is_some()) {
                            self.resize_pool(ctl, &p.name, Vec::new());
                        }
                        match ctl.sched.update_pool(spec) {
                            Ok(victims) => {
                                let names = self.stop_victims(
                                    ctl,
                                    victims,
                                    &format!(
                                        "interrupted: pool {} was changed and no longer admits the job",
                                        p.name
                                    ),
                                );
                                if !names.is_empty() {
                                    tracing::info!(pool = %p.name, jobs = ?names, "jobs a changed pool no longer admits wait again");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(pool = %p.name, error = %e, "cannot apply the pool change")
                            }
                        }
                        ctl.procurement.insert(p.name.clone(), proc_);
                        self.resize_pool(ctl, &p.name, nodes);
                    }
                    ctl.pools.insert(p.name.clone(), p.digest.clone());
                    continue;
                }
                None => {}
            }
            if let Some((spec, nodes, proc_)) = convert::pool(&p) {
                match ctl.sched.add_pool(spec) {
                    Ok(()) => {
                        pool_added = true;
                        ctl.nodes.insert(p.name.clone(), nodes.clone());
                        for n in nodes {
                            if let Err(e) = ctl.sched.add_node(&p.name, n) {
                                tracing::warn!(pool = %p.name, error = %e, "cannot add node");
                            }
                        }
                        ctl.procurement.insert(p.name.clone(), proc_);
                    }
                    Err(e) => tracing::warn!(pool = %p.name, error = %e, "cannot add pool"),
                }
            }
            ctl.pools.insert(p.name.clone(), p.digest.clone());
        }
        let queues = store.list_objects("Queue").await?;
        ctl.queue_teams = queues
            .iter()
            .map(|q| (q.name.clone(), q.team.clone().unwrap_or_default()))
            .collect();
        for q in queues {
            // A new pool may give an unchanged queue a quota it could not have before.
            if !pool_added && ctl.queues.get(&q.name) == Some(&q.digest) {
                continue;
            }
            let Some(spec) = convert::queue(&q, &ctl.pools) else {
                continue;
            };
            let r = if ctl.queues.contains_key(&q.name) {
                ctl.sched.update_queue(spec)
            } else {
                ctl.sched.add_queue(spec)
            };
            match r {
                Ok(()) => {
                    ctl.queues.insert(q.name.clone(), q.digest.clone());
                }
                Err(e) => tracing::warn!(queue = %q.name, error = %e, "cannot use queue"),
            }
        }
        Ok(())
    }

    /// Stages one write of a job's record (precondition: the generation we hold; absent for a
    /// job never stored), with an audit event when `action` is given. The next `flush`
    /// commits it; the generation is counted at once, so several writes of one job staged
    /// before a flush apply in order within its transaction.
    fn stage(
        &self,
        name: &str,
        t: &mut Tracked,
        actor: &str,
        action: Option<&str>,
    ) -> Result<(), CoreError> {
        let spec_json = match &mut t.spec_json {
            Some(j) => j,
            None => t.spec_json.insert(canonical_spec(&t.record.spec)?),
        };
        let (document_json, digest) = encode_job(name, spec_json, &t.record.status)?;
        // The stored row is `document_json`; the object's document is not read again.
        let document = Document {
            api_version: API_VERSION.into(),
            kind: JOB_KIND.into(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..ObjectMeta::default()
            },
            spec: serde_json::Value::Null,
        };
        let now = now_str();
        let generation = t.generation + 1;
        let object = StoredObject {
            kind: JOB_KIND.into(),
            name: name.to_string(),
            team: Some(t.team.clone()),
            document,
            digest: digest.clone(),
            generation,
            created_at: t.created_at.clone(),
            updated_at: now.clone(),
            updated_by: actor.to_string(),
        };
        let precondition = if t.generation == 0 {
            Precondition::Absent
        } else {
            Precondition::Generation(t.generation)
        };
        let event = action.map(|a| NewAuditEvent {
            ts: now,
            actor: actor.to_string(),
            action: a.to_string(),
            kind: JOB_KIND.into(),
            name: name.to_string(),
            team: Some(t.team.clone()),
            before_digest: None,
            after_digest: Some(digest),
            detail: serde_json::json!({
                "state": t.record.status.state.as_str(),
                "attempts": t.record.status.attempts.len(),
                "message": t.record.status.message,
            }),
        });
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Write {
                name: name.to_string(),
                op: Op::PutEncoded {
                    object,
                    document_json,
                    precondition,
                },
                event,
            });
        t.generation = generation;
        Ok(())
    }

    fn take_writes(&self) -> Vec<Write> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Commits every staged write in one transaction: all of them or none.
    async fn flush(&self) -> Result<(), CoreError> {
        let Some(batch) = self.take_batch() else {
            return Ok(());
        };
        let _order = self.commit_order.lock().await;
        self.platform.store().commit(batch).await?;
        Ok(())
    }

    /// Every staged write as one batch; `None` when nothing is staged.
    fn take_batch(&self) -> Option<Batch> {
        self.take_staged().map(|(b, _)| b)
    }

    /// Commits the staged writes of the controller's own changes in one transaction; if that
    /// fails, each on its own, and a job whose write still fails has its generation read back
    /// from the store so its next write (of its whole record) can succeed.
    async fn flush_best_effort(&self, ctl: &mut Ctl) {
        let Some(staged) = self.take_staged() else {
            return;
        };
        let failed = {
            let _order = self.commit_order.lock().await;
            self.commit_best_effort(staged).await
        };
        self.reread_generations(ctl, failed).await;
    }

    /// `flush_best_effort` that lets go of `ctl` while it commits (the commit order is taken
    /// first), so submissions go on meanwhile.
    async fn flush_released(&self, ctl: tokio::sync::MutexGuard<'_, Ctl>) {
        let Some(staged) = self.take_staged() else {
            return;
        };
        let order = self.commit_order.lock().await;
        drop(ctl);
        let failed = self.commit_best_effort(staged).await;
        drop(order);
        if !failed.is_empty() {
            let mut ctl = self.ctl.lock().await;
            self.reread_generations(&mut ctl, failed).await;
        }
    }

    /// The staged writes as one batch of every op and event, with each op's job and whether it
    /// has an event (to store them one by one if the whole cannot be stored).
    fn take_staged(&self) -> Option<(Batch, Vec<(String, bool)>)> {
        let writes = self.take_writes();
        if writes.is_empty() {
            return None;
        }
        let mut batch = Batch {
            ops: Vec::with_capacity(writes.len()),
            events: Vec::new(),
        };
        let mut names = Vec::with_capacity(writes.len());
        for w in writes {
            batch.ops.push(w.op);
            names.push((w.name, w.event.is_some()));
            batch.events.extend(w.event);
        }
        Some((batch, names))
    }

    /// Commits a batch, else each write on its own; returns the jobs whose write failed.
    async fn commit_best_effort(
        &self,
        (batch, names): (Batch, Vec<(String, bool)>),
    ) -> Vec<String> {
        let Err(e) = self.platform.store().commit_ref(&batch).await else {
            return Vec::new();
        };
        let mut failed = Vec::with_capacity(names.len());
        tracing::warn!(error = %e, writes = names.len(), "cannot store job changes together; storing them one by one");
        let mut events = batch.events.into_iter();
        for ((name, has_event), op) in names.into_iter().zip(batch.ops) {
            let event = if has_event { events.next() } else { None };
            let r = self
                .platform
                .store()
                .commit(Batch {
                    ops: vec![op],
                    events: event.into_iter().collect(),
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(job = %name, error = %e, "cannot save job");
                failed.push(name);
            }
        }
        failed
    }

    /// Reads back the stored generation of jobs whose write failed.
    async fn reread_generations(&self, ctl: &mut Ctl, failed: Vec<String>) {
        for name in failed {
            if let Ok(Some(o)) = self.platform.store().get_object(JOB_KIND, &name).await
                && let Some(t) = ctl.jobs.get_mut(&name)
            {
                t.generation = o.generation;
            }
        }
    }

    /// Validates, checks with the scheduler that some pool could ever run it, stores it.
    pub async fn submit(&self, who: &Identity, req: SubmitJobRequest) -> Result<Job, CoreError> {
        self.submit_or_check(who, req, false).await
    }

    fn may_submit(who: &Identity, team: &str) -> Result<(), CoreError> {
        if who.role < Role::Member || !(who.is_admin() || who.in_team(team)) {
            return Err(CoreError::PermissionDenied(format!(
                "{} (role {}, team {}) may not submit jobs for team {}: requires member of the team or admin",
                who.actor(),
                who.role,
                who.team.as_deref().unwrap_or("-"),
                team
            )));
        }
        Ok(())
    }

    /// The checks of `submit` that need neither the store nor the scheduler.
    pub fn precheck(&self, who: &Identity, name: &str, spec: &JobSpec) -> Result<(), CoreError> {
        Self::may_submit(who, &spec.team)?;
        plinth_config::kinds::validate_name(name)
            .map_err(|m| CoreError::invalid(format!("name: {m}")))?;
        convert::validate(spec)?;
        self.check_runtime(spec)
    }

    /// `simulatedRuntime` is required by the simulated executor and refused by the local one.
    fn check_runtime(&self, spec: &JobSpec) -> Result<(), CoreError> {
        match (&spec.simulated_runtime, self.exec.is_simulated()) {
            (Some(_), false) => Err(CoreError::invalid(
                "spec.simulatedRuntime: only a server started with --executor simulated (benchmarks) accepts it; this one runs real processes",
            )),
            (None, true) => Err(CoreError::invalid(
                "spec.simulatedRuntime: required: this server runs the simulated executor (--executor simulated), which starts no process and holds each attempt's resources for this long",
            )),
            _ => Ok(()),
        }
    }

    /// `submit`, or with `dry_run` every check of it (the scheduler's included) and nothing
    /// stored.
    pub async fn submit_or_check(
        &self,
        who: &Identity,
        req: SubmitJobRequest,
        dry_run: bool,
    ) -> Result<Job, CoreError> {
        let mut jobs = self.submit_many(who, vec![req], dry_run).await?;
        jobs.pop()
            .ok_or_else(|| internal("a submit of one job returned none"))
    }

    /// Submits jobs together: every check of `submit` for each, then one transaction stores
    /// them all (or, on any problem, none; the error names the job by its index).
    pub async fn submit_many(
        &self,
        who: &Identity,
        reqs: Vec<SubmitJobRequest>,
        dry_run: bool,
    ) -> Result<Vec<Job>, CoreError> {
        let single = reqs.len() == 1;
        if reqs.is_empty() {
            return Err(CoreError::invalid("jobs: must hold at least one job"));
        }
        if reqs.len() > MAX_BATCH {
            return Err(CoreError::invalid(format!(
                "jobs: {} jobs is more than the {MAX_BATCH} one request may submit",
                reqs.len()
            )));
        }
        // Names a problem with the job at index `i` (no prefix for a single submit).
        let at = |i: usize, name: &str, e: CoreError| -> CoreError {
            if single {
                return e;
            }
            let prefix = format!("jobs[{i}] (Job/{name})");
            match e {
                CoreError::Invalid { message, details } => CoreError::Invalid {
                    message: format!("{prefix}: {message}"),
                    details,
                },
                CoreError::Conflict(m) => CoreError::Conflict(format!("{prefix}: {m}")),
                CoreError::PermissionDenied(m) => {
                    CoreError::PermissionDenied(format!("{prefix}: {m}"))
                }
                other => other,
            }
        };
        let store = self.platform.store();
        // The cost guards' figures, read before the controller is locked.
        self.guard.refresh(store).await;
        let mut ctl = self.ctl.lock().await;
        let mut synced = false;
        let mut names = std::collections::HashSet::new();
        let mut checked = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.into_iter().enumerate() {
            let spec = req.spec;
            let name = match req.name {
                Some(n) => n,
                None => generate_name(&spec.command),
            };
            let check = async {
                Self::may_submit(who, &spec.team)?;
                plinth_config::kinds::validate_name(&name)
                    .map_err(|m| CoreError::invalid(format!("name: {m}")))?;
                convert::validate(&spec)?;
                self.check_runtime(&spec)?;
                // Queues as last read; one not known yet may be new: read them again.
                if !synced
                    && (!ctl.queue_teams.contains_key(&spec.queue)
                        || !ctl.queues.contains_key(&spec.queue))
                {
                    self.sync_config(&mut ctl).await?;
                    synced = true;
                }
                match ctl.queue_teams.get(&spec.queue).cloned() {
                    None => Err(CoreError::invalid(format!(
                        "spec.queue: queue {:?} does not exist",
                        spec.queue
                    ))),
                    Some(t) if t != spec.team => Err(CoreError::invalid(format!(
                        "spec.queue: queue {:?} belongs to team {}, not {}",
                        spec.queue,
                        if t.is_empty() { "-" } else { t.as_str() },
                        spec.team
                    ))),
                    Some(_) => Ok(()),
                }?;
                if !names.insert(name.clone()) {
                    return Err(CoreError::Conflict(format!(
                        "Job {name:?} appears twice in this request"
                    )));
                }
                // One job: a clear error now; many: the commit's precondition catches it.
                if single && store.get_object(JOB_KIND, &name).await?.is_some() {
                    return Err(CoreError::Conflict(format!("Job {name:?} already exists")));
                }
                Ok::<(), CoreError>(())
            };
            check.await.map_err(|e| at(i, &name, e))?;
            checked.push((name, spec));
        }
        let held = self
            .cost_holds(&checked)
            .map_err(|(i, e)| at(i, &checked[i].0, e))?;
        let ms = now_ms();
        let now = now_str();
        let mut ids = Vec::with_capacity(checked.len());
        let mut problem = None;
        for (i, (name, spec)) in checked.iter().enumerate() {
            if ctl.jobs.contains_key(name) {
                problem = Some(at(
                    i,
                    name,
                    CoreError::Conflict(format!("Job {name:?} already exists")),
                ));
                break;
            }
            if !ctl.queues.contains_key(&spec.queue) {
                problem = Some(at(
                    i,
                    name,
                    CoreError::invalid(format!(
                        "spec.queue: queue {:?} has no quota on a pool this server runs (local pools only)",
                        spec.queue
                    )),
                ));
                break;
            }
            match ctl.sched.submit(convert::sched_job(spec), ms) {
                Ok(id) => ids.push(id),
                Err(r) => {
                    problem = Some(at(
                        i,
                        name,
                        CoreError::invalid(format!("spec: rejected: {}", r.reason)),
                    ));
                    break;
                }
            }
        }
        if dry_run || problem.is_some() {
            for id in &ids {
                let _ = ctl.sched.cancel(*id, ms);
            }
        }
        if let Some(e) = problem {
            return Err(e);
        }
        let mut tracked = Vec::with_capacity(checked.len());
        for ((name, spec), id) in checked.into_iter().zip(ids.iter().copied()) {
            let mut t = Tracked {
                team: spec.team.clone(),
                generation: 0,
                created_at: now.clone(),
                record: JobRecord {
                    spec,
                    status: JobStatus {
                        state: JobState::Pending,
                        submitted_at: now.clone(),
                        submitted_by: who.actor(),
                        submitted_ms: i64::try_from(ms).unwrap_or(i64::MAX),
                        admitted_at: None,
                        finished_at: None,
                        attempts: Vec::new(),
                        wait_reason: Some("not yet considered by the scheduler".into()),
                        message: None,
                        cancel_requested: false,
                    },
                },
                sched: Some(id),
                reason_ms: 0,
                spec_json: None,
            };
            approval::hold(&mut ctl, &mut t, held.get(&name), ms);
            tracked.push((name, t));
        }
        if dry_run {
            return Ok(tracked.iter().map(|(n, t)| view(n, t)).collect());
        }
        let mut staged = Ok(());
        for (name, t) in tracked.iter_mut() {
            staged = self.stage(name, t, &who.actor(), Some("job.submit"));
            if staged.is_err() {
                break;
            }
        }
        let batch = match staged {
            Ok(()) => self.take_batch(),
            Err(e) => {
                self.take_writes();
                for id in &ids {
                    let _ = ctl.sched.cancel(*id, ms);
                }
                return Err(e);
            }
        };
        // The commit runs without `ctl`, so the controller's pass and other submissions go on
        // meanwhile; `commit_order`, taken before `ctl` is let go, keeps the transactions in
        // order. Until the jobs are stored the scheduler may admit them: those admissions wait
        // in `deferred` and start below.
        let order = self.commit_order.lock().await;
        ctl.committing.extend(ids.iter().copied());
        drop(ctl);
        let stored = match batch {
            Some(b) => self
                .platform
                .store()
                .commit(b)
                .await
                .map(drop)
                .map_err(CoreError::from),
            None => Ok(()),
        };
        drop(order);
        let mut ctl = self.ctl.lock().await;
        let mut admitted = Vec::new();
        for id in &ids {
            ctl.committing.remove(id);
            if let Some(a) = ctl.deferred.remove(id) {
                admitted.push((*id, a));
            }
        }
        if let Err(e) = stored {
            for id in &ids {
                let _ = ctl.sched.cancel(*id, ms);
            }
            drop(ctl);
            self.wake.notify_one();
            return Err(match e {
                CoreError::Conflict(m) if !single => {
                    CoreError::Conflict(format!("{m}; no job of this request was stored"))
                }
                other => other,
            });
        }
        let mut out = Vec::with_capacity(tracked.len());
        for (name, t) in tracked {
            out.push(view(&name, &t));
            if let Some(id) = t.sched {
                ctl.by_id.insert(id, name.clone());
            }
            ctl.jobs.insert(name, t);
        }
        if !admitted.is_empty() {
            for (id, (pool, placement)) in admitted {
                if let Some(name) = ctl.by_id.get(&id).cloned() {
                    self.metrics.jobs.admissions.inc();
                    self.start_attempt(&mut ctl, &name, &pool, &placement).await;
                }
            }
            self.flush_best_effort(&mut ctl).await;
        }
        drop(ctl);
        self.wake.notify_one();
        Ok(out)
    }

    /// One job, if `who` may read it.
    pub async fn get(&self, who: &Identity, name: &str) -> Result<Job, CoreError> {
        let obj = self
            .platform
            .store()
            .get_object(JOB_KIND, name)
            .await?
            .filter(|o| authorize_read(who, o.team.as_deref()))
            .ok_or_else(|| CoreError::NotFound(format!("Job {name:?} not found")))?;
        let mut job = from_object(obj)?;
        self.live_reasons(std::slice::from_mut(&mut job)).await;
        Ok(job)
    }

    /// Puts the scheduler's current wait reason on each pending job: fresher than the stored
    /// one, which is written only for jobs that waited a while, and at most every few seconds.
    async fn live_reasons(&self, jobs: &mut [Job]) {
        if !jobs.iter().any(|j| j.status.state == JobState::Pending) {
            return;
        }
        let ctl = self.ctl.lock().await;
        for j in jobs
            .iter_mut()
            .filter(|j| j.status.state == JobState::Pending)
        {
            if let Some(id) = ctl.jobs.get(&j.name).and_then(|t| t.sched)
                && let Ok(Some(w)) = ctl.sched.why(id)
            {
                j.status.wait_reason = Some(w.message);
            }
        }
    }

    /// Jobs `who` may read, newest first, optionally of one team and in one state.
    pub async fn list(
        &self,
        who: &Identity,
        team: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<Job>, CoreError> {
        let state = match state {
            Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                CoreError::invalid(format!(
                    "state: {s:?} is not one of pending, admitted, running, succeeded, failed, cancelled, lost"
                ))
            })?),
            None => None,
        };
        let mut out = Vec::new();
        for o in self.platform.store().list_objects(JOB_KIND).await? {
            if !authorize_read(who, o.team.as_deref()) {
                continue;
            }
            if team.is_some_and(|t| o.team.as_deref() != Some(t)) {
                continue;
            }
            let j = from_object(o)?;
            if state.is_some_and(|s| j.status.state != s) {
                continue;
            }
            out.push(j);
        }
        out.sort_by_key(|j| std::cmp::Reverse(j.status.submitted_ms));
        self.live_reasons(&mut out).await;
        Ok(out)
    }

    /// Cancels a waiting job at once; asks a running one to stop (it ends as cancelled).
    pub async fn cancel(&self, who: &Identity, name: &str) -> Result<Job, CoreError> {
        let job = self.get(who, name).await?;
        if !(who.is_admin() || (who.role >= Role::Member && who.in_team(&job.spec.team))) {
            return Err(CoreError::PermissionDenied(format!(
                "{} (role {}) may not cancel Job {name}: requires member of team {} or admin",
                who.actor(),
                who.role,
                job.spec.team
            )));
        }
        let mut ctl = self.ctl.lock().await;
        let ms = now_ms();
        let Ctl {
            sched, jobs, by_id, ..
        } = &mut *ctl;
        let Some(t) = jobs.get_mut(name) else {
            // Not tracked: already ended.
            return Err(CoreError::Conflict(format!(
                "Job {name} has already ended ({})",
                job.status.state.as_str()
            )));
        };
        if t.record.status.state.is_terminal() {
            return Err(CoreError::Conflict(format!(
                "Job {name} has already ended ({})",
                t.record.status.state.as_str()
            )));
        }
        if let Some(id) = t.sched.take() {
            let _ = sched.cancel(id, ms);
            by_id.remove(&id);
        }
        let running = t
            .record
            .status
            .attempts
            .last()
            .filter(|a| a.ended_at.is_none())
            .map(|a| a.n);
        match running {
            Some(n) => {
                t.record.status.cancel_requested = true;
                let world = t.record.spec.nodes.max(1);
                if let Err(e) = self
                    .exec
                    .stop_pods(name, n, world, StopReason::Cancel, STOP_GRACE)
                {
                    tracing::warn!(job = name, error = %e, "cannot stop attempt");
                }
            }
            None => {
                t.record.status.state = JobState::Cancelled;
                t.record.status.finished_at = Some(now_str());
                t.record.status.wait_reason = None;
                t.record.status.message = Some(format!("cancelled by {}", who.actor()));
            }
        }
        self.stage(name, t, &who.actor(), Some("job.cancel"))?;
        self.flush().await?;
        let out = view(name, t);
        if out.status.state.is_terminal() {
            jobs.remove(name);
        }
        drop(ctl);
        self.wake.notify_one();
        Ok(out)
    }

    /// A piece of the log of attempt `attempt` (default: the latest).
    pub async fn logs(
        &self,
        who: &Identity,
        name: &str,
        stream: LogStream,
        offset: u64,
        attempt: Option<u32>,
        pod: u32,
    ) -> Result<(Vec<u8>, u64, bool), CoreError> {
        let job = self.get(who, name).await?;
        if pod >= job.spec.nodes.max(1) {
            return Err(CoreError::invalid(format!(
                "pod: Job {name} has pods 0 to {} (nodes: {}); there is no pod {pod}",
                job.spec.nodes.max(1) - 1,
                job.spec.nodes.max(1)
            )));
        }
        let n = match attempt {
            Some(n) => n,
            None => match job.status.attempts.last() {
                Some(a) => a.n,
                None => return Ok((Vec::new(), 0, job.status.state.is_terminal())),
            },
        };
        if !job.status.attempts.iter().any(|a| a.n == n) {
            return Err(CoreError::NotFound(format!(
                "Job {name} has no attempt {n}"
            )));
        }
        let chunk = self
            .exec
            .read_log(&pod_id(name, n, pod), stream, offset, 1 << 20);
        match chunk {
            Ok(c) => Ok((c.data, c.next_offset, c.complete)),
            Err(ExecError::NotFound { .. }) => Ok((Vec::new(), offset, true)),
            Err(e) => Err(internal(e)),
        }
    }

    /// Reads every stored job; waiting ones go back to the scheduler with their submit
    /// times; running ones are adopted, or marked lost (and retried when they may be).
    async fn recover(&self) -> Result<(), CoreError> {
        let mut ctl = self.ctl.lock().await;
        self.sync_config(&mut ctl).await?;
        let recovered: HashMap<AttemptId, RecoveredState> = self
            .exec
            .recover()
            .map_err(internal)?
            .into_iter()
            .map(|r| (r.id, r.state))
            .collect();
        let mut objects = self.platform.store().list_objects(JOB_KIND).await?;
        objects.sort_by_key(|o| o.created_at.clone());
        let mut adopted = Vec::new();
        let mut waiting = Vec::new();
        for o in objects {
            let team = o.team.clone().unwrap_or_default();
            let (name, generation, created_at) =
                (o.name.clone(), o.generation, o.created_at.clone());
            let record: JobRecord = match serde_json::from_value(o.document.spec) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(job = %name, error = %e, "stored job does not parse; skipped");
                    continue;
                }
            };
            if record.status.state.is_terminal() {
                continue;
            }
            let t = Tracked {
                team,
                generation,
                created_at,
                record,
                sched: None,
                reason_ms: 0,
                spec_json: None,
            };
            let running = t
                .record
                .status
                .attempts
                .last()
                .filter(|a| a.ended_at.is_none())
                .map(|a| a.n);
            match running {
                Some(n) => adopted.push((name, t, n)),
                None => waiting.push((name, t)),
            }
        }
        // Running attempts first, so they get their resources back before anything waits.
        let mut rebound = Vec::new();
        for (name, mut t, n) in adopted {
            let id = AttemptId::new(&name, n);
            // A gang is adopted only whole: with a pod lost or unknown, the others stop and
            // the attempt is lost.
            let world = t.record.spec.nodes.max(1);
            let missing = (1..world).find(|&r| {
                !matches!(
                    recovered.get(&pod_id(&name, n, r)),
                    Some(RecoveredState::Adopted(_)) | Some(RecoveredState::Exited(_))
                )
            });
            if let Some(rank) = missing {
                let _ = self
                    .exec
                    .stop_pods(&name, n, world, StopReason::Cancel, STOP_GRACE);
                if let Some(a) = t.record.status.attempts.last_mut() {
                    a.ended_at = Some(now_str());
                    a.exit = Some("lost".into());
                    a.reason = Some("lost".into());
                }
                let msg = format!("lost: pod {rank} of the attempt did not survive a restart");
                self.after_failure(&mut ctl, &name, t, &msg).await;
                continue;
            }
            match recovered.get(&id) {
                Some(RecoveredState::Adopted(_)) | Some(RecoveredState::Exited(_)) => {
                    let ms = u64::try_from(t.record.status.submitted_ms).unwrap_or(0);
                    match ctl.sched.submit(convert::sched_job(&t.record.spec), ms) {
                        Ok(sid) => {
                            t.sched = Some(sid);
                            ctl.by_id.insert(sid, name.clone());
                            rebound.push(name.clone());
                        }
                        Err(r) => {
                            tracing::warn!(job = %name, reason = %r.reason, "adopted job no longer fits any pool")
                        }
                    }
                    ctl.jobs.insert(name, t);
                }
                Some(RecoveredState::Lost(outcome)) => {
                    let outcome = outcome.clone();
                    self.attempt_ended(&mut ctl, &name, t, &outcome).await;
                }
                None => {
                    let now = now_str();
                    if let Some(a) = t.record.status.attempts.last_mut() {
                        a.ended_at = Some(now);
                        a.exit = Some("lost".into());
                        a.reason = Some("lost".into());
                    }
                    self.after_failure(
                        &mut ctl,
                        &name,
                        t,
                        "lost: no record of the attempt after a restart",
                    )
                    .await;
                }
            }
        }
        // Bind the adopted attempts to their admissions. One that no longer fits keeps
        // running outside the scheduler's books rather than being started a second time.
        let ms = now_ms();
        let mut admitted = std::collections::HashSet::new();
        let mut to_start = Vec::new();
        for d in ctl.sched.schedule(ms) {
            if let Decision::Admitted {
                job,
                pool,
                placement,
                ..
            } = d
            {
                admitted.insert(job);
                // A job retried above (its attempt was lost) starts now.
                if let Some(name) = ctl.by_id.get(&job)
                    && !rebound.contains(name)
                {
                    to_start.push((name.clone(), pool, placement));
                }
            }
        }
        let Ctl {
            sched, jobs, by_id, ..
        } = &mut *ctl;
        for name in &rebound {
            let Some(t) = jobs.get_mut(name) else {
                continue;
            };
            if let Some(id) = t.sched
                && !admitted.contains(&id)
            {
                tracing::warn!(job = %name, "adopted job does not fit its pool any more; it runs unaccounted");
                let _ = sched.cancel(id, ms);
                by_id.remove(&id);
                t.sched = None;
            }
        }
        for (name, pool, placement) in to_start {
            self.metrics.jobs.admissions.inc();
            self.start_attempt(&mut ctl, &name, &pool, &placement).await;
        }
        for (name, mut t) in waiting {
            if t.record.status.state == JobState::PendingApproval {
                ctl.jobs.insert(name, t);
                continue;
            }
            let ms = u64::try_from(t.record.status.submitted_ms).unwrap_or(0);
            t.record.status.state = JobState::Pending;
            match ctl.sched.submit(convert::sched_job(&t.record.spec), ms) {
                Ok(sid) => {
                    t.sched = Some(sid);
                    ctl.by_id.insert(sid, name.clone());
                    ctl.jobs.insert(name, t);
                }
                Err(r) => {
                    t.record.status.state = JobState::Failed;
                    t.record.status.finished_at = Some(now_str());
                    t.record.status.message = Some(format!("rejected after restart: {}", r.reason));
                    if let Err(e) = self.stage(&name, &mut t, SYSTEM, Some("job.finish")) {
                        tracing::warn!(job = %name, error = %e, "cannot save job");
                    }
                }
            }
        }
        self.flush_best_effort(&mut ctl).await;
        Ok(())
    }

    /// One pass: admissions, preemptions, finished attempts; every TICK also config, wait
    /// reasons and metrics. The job changes of a pass are stored in one transaction.
    async fn tick(&self) -> Result<(), CoreError> {
        let mut ctl = self.ctl.lock().await;
        let full = ctl.last_full.is_none_or(|t| t.elapsed() >= TICK);
        if full {
            ctl.last_full = Some(Instant::now());
            if let Err(e) = self.sync_config(&mut ctl).await {
                tracing::warn!(error = %e, "job controller: cannot read pools and queues");
            }
        }
        // Attempts that ended since the last pass, first, so their resources are free.
        let running: Vec<(String, u32, u32)> = if self.exec.is_simulated() {
            Vec::new()
        } else {
            ctl.jobs
                .iter()
                .filter_map(|(n, t)| {
                    t.record
                        .status
                        .attempts
                        .last()
                        .filter(|a| a.ended_at.is_none())
                        .map(|a| (n.clone(), a.n, t.record.spec.nodes.max(1)))
                })
                .collect()
        };
        for outcome in self.exec.ended(running, STOP_GRACE) {
            let name = outcome.id.job_id.clone();
            let current = ctl.jobs.get(&name).and_then(|t| {
                t.record
                    .status
                    .attempts
                    .last()
                    .filter(|a| a.ended_at.is_none())
                    .map(|a| a.n)
            });
            if current == Some(outcome.id.attempt)
                && let Some(t) = ctl.jobs.remove(&name)
            {
                self.attempt_ended(&mut ctl, &name, t, &outcome).await;
            }
        }
        let ms = now_ms();
        for d in ctl.sched.schedule(ms) {
            match d {
                Decision::Admitted {
                    job,
                    pool,
                    placement,
                    ..
                } => {
                    let Some(name) = ctl.by_id.get(&job).cloned() else {
                        if ctl.committing.contains(&job) {
                            ctl.deferred.insert(job, (pool, placement));
                        } else if let Some(h) = ctl.hold_mut(job) {
                            self.metrics.jobs.admissions.inc();
                            h.admitted(&pool, &placement);
                        }
                        continue;
                    };
                    self.metrics.jobs.admissions.inc();
                    self.start_attempt(&mut ctl, &name, &pool, &placement).await;
                }
                Decision::Preempted { job, reason, .. } => {
                    self.metrics.jobs.preemptions.inc();
                    let Some(name) = ctl.by_id.get(&job).cloned() else {
                        if ctl.deferred.remove(&job).is_some() {
                            // Admitted while its submission was being stored, not started yet:
                            // it waits again at once.
                            let _ = ctl.sched.requeue(job, ms);
                        } else if let Some(h) = ctl.hold_mut(job) {
                            h.revoke(format!("preempted: {reason}"));
                        }
                        continue;
                    };
                    if let Some(t) = ctl.jobs.get(&name)
                        && let Some(a) = t.record.status.attempts.last()
                        && a.ended_at.is_none()
                    {
                        let _ = self.exec.stop_pods(
                            &name,
                            a.n,
                            t.record.spec.nodes.max(1),
                            StopReason::Preempted,
                            STOP_GRACE,
                        );
                    }
                    if let Some(t) = ctl.jobs.get_mut(&name) {
                        t.record.status.message = Some(format!("preempted: {reason}"));
                    }
                }
            }
        }
        if full {
            // Wait reasons that changed, of jobs that have waited REASON_STORE_AFTER_MS at least
            // (reads show the scheduler's live reason of every pending job, so a job admitted
            // soon never needs one stored); a job's reason is stored again at most every
            // REASON_EVERY_MS, as its figures change often.
            let settled = i64::try_from(ms.saturating_sub(REASON_STORE_AFTER_MS)).unwrap_or(0);
            let Ctl { sched, jobs, .. } = &mut *ctl;
            for (name, t) in jobs.iter_mut() {
                if t.record.status.state != JobState::Pending
                    || t.record.status.submitted_ms > settled
                {
                    continue;
                }
                let Some(id) = t.sched else { continue };
                if t.reason_ms != 0 && ms.saturating_sub(t.reason_ms) < REASON_EVERY_MS {
                    continue;
                }
                let why = sched.why(id).ok().flatten().map(|w| w.message);
                if why.is_some() && why != t.record.status.wait_reason {
                    t.record.status.wait_reason = why;
                    t.reason_ms = ms;
                    if let Err(e) = self.stage(name, t, SYSTEM, None) {
                        tracing::warn!(job = %name, error = %e, "cannot save wait reason");
                    }
                }
            }
            self.update_metrics(&ctl);
            self.exec.reap();
        }
        self.flush_released(ctl).await;
        Ok(())
    }

    fn update_metrics(&self, ctl: &Ctl) {
        for q in ctl.queues.keys() {
            if let Ok(n) = ctl.sched.pending_len(q) {
                self.metrics
                    .jobs
                    .pending
                    .get_or_create(&crate::metrics::QueueLabel { queue: q.clone() })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        for p in ctl.procurement.keys() {
            if let Ok((used, _total)) = ctl.sched.pool_gpus(p) {
                self.metrics
                    .jobs
                    .gpus_allocated
                    .get_or_create(&crate::metrics::PoolLabel { pool: p.clone() })
                    .set(used);
            }
        }
    }

    async fn start_attempt(
        &self,
        ctl: &mut Ctl,
        name: &str,
        pool: &str,
        placement: &[plinth_sched::PodPlacement],
    ) {
        let procurement = ctl
            .procurement
            .get(pool)
            .copied()
            .unwrap_or(plinth_exec::Procurement::OnDemand);
        let Some(mut t) = ctl.jobs.remove(name) else {
            return;
        };
        let n = t.record.status.attempts.len() as u32 + 1;
        let spec = &t.record.spec;
        let world = u32::try_from(placement.len()).unwrap_or(u32::MAX).max(1);
        let gpu_names = |gpus: &[(u32, u32)]| -> Vec<String> {
            gpus.iter()
                .map(|(i, m)| {
                    if *m >= 1000 {
                        i.to_string()
                    } else {
                        format!("{i}:{m}/1000")
                    }
                })
                .collect()
        };
        // One executor attempt per pod (rank), each on its node with its own GPUs.
        let mut pods = Vec::with_capacity(placement.len().max(1));
        for rank in 0..world {
            let p = placement.get(rank as usize);
            let node = p.map(|p| p.node.clone()).unwrap_or_default();
            let gpus: &[(u32, u32)] = p.map(|p| p.gpus.as_slice()).unwrap_or_default();
            let id = pod_id(name, n, rank);
            let mut a = AttemptSpec::new(id.job_id, n, spec.command.clone());
            a.env = spec.env.clone();
            a.gpus = gpu_slots(gpus);
            a.checkpoint_dir = spec.checkpoint_dir.clone().map(Into::into);
            a.max_runtime = spec
                .max_runtime
                .as_deref()
                .and_then(|d| parse_duration(d).ok());
            a.idle = spec
                .idle_timeout
                .as_deref()
                .and_then(|d| parse_duration(d).ok())
                .map(IdlePolicy::after);
            a.stop_grace = STOP_GRACE;
            a.pool = pool.to_string();
            a.procurement = procurement;
            a.tags = spec.tags.clone();
            a.tags.insert("team".into(), t.team.clone());
            a.pod = Some(PodInfo {
                job: name.to_string(),
                rank,
                world_size: world,
                node: node.clone(),
            });
            pods.push((a, node, gpu_names(gpus)));
        }
        let now = now_str();
        let wait_ms =
            now_ms().saturating_sub(u64::try_from(t.record.status.submitted_ms).unwrap_or(0));
        self.metrics
            .jobs
            .time_to_admission
            .observe(wait_ms as f64 / 1000.0);
        t.record.status.admitted_at = Some(now.clone());
        t.record.status.wait_reason = None;
        t.record.status.attempts.push(Attempt {
            n,
            started_at: now.clone(),
            ended_at: None,
            exit: None,
            reason: None,
            pool: pool.to_string(),
            node: pods.first().map(|p| p.1.clone()).unwrap_or_default(),
            gpus: pods.first().map(|p| p.2.clone()).unwrap_or_default(),
            pods: if world > 1 {
                pods.iter()
                    .map(|(a, node, gpus)| AttemptPod {
                        rank: a.pod.as_ref().map_or(0, |p| p.rank),
                        node: node.clone(),
                        gpus: gpus.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        });
        // `AlreadyExists`: the server died after starting this attempt and before recording
        // it; the attempt is adopted (its outcome is polled like any other).
        let runtime = t
            .record
            .spec
            .simulated_runtime
            .as_deref()
            .and_then(|d| parse_duration(d).ok())
            .unwrap_or_default();
        let mut started = Ok(());
        for (a, _, _) in pods {
            let rank = a.pod.as_ref().map_or(0, |p| p.rank);
            match self.exec.start(a, runtime) {
                Ok(()) | Err(ExecError::AlreadyExists { .. }) => {}
                Err(e) => {
                    // The pods started already stop; the attempt ends with the exec error.
                    if rank > 0 {
                        let _ = self
                            .exec
                            .stop_pods(name, n, rank, StopReason::Cancel, STOP_GRACE);
                    }
                    started = Err(if world > 1 {
                        format!("pod {rank}: {e}")
                    } else {
                        e.to_string()
                    });
                    break;
                }
            }
        }
        match started {
            Ok(()) => {
                t.record.status.state = JobState::Running;
                if let Err(e) = self.stage(name, &mut t, SYSTEM, Some("job.admit")) {
                    tracing::warn!(job = name, error = %e, "cannot save job");
                }
                ctl.jobs.insert(name.to_string(), t);
            }
            Err(msg) => {
                // The executor recorded the attempt as ended with exec_error.
                if let Some(last) = t.record.status.attempts.last_mut() {
                    last.ended_at = Some(now_str());
                    last.exit = Some(format!("exec error: {msg}"));
                    last.reason = Some(EndReason::ExecError.as_str().into());
                }
                if let Some(id) = t.sched.take() {
                    let _ = ctl.sched.finish(id, now_ms());
                    ctl.by_id.remove(&id);
                }
                self.after_failure(ctl, name, t, &format!("attempt {n}: {msg}"))
                    .await;
            }
        }
    }

    /// Records the end of the latest attempt and decides what follows.
    async fn attempt_ended(&self, ctl: &mut Ctl, name: &str, mut t: Tracked, o: &Outcome) {
        let ms = now_ms();
        self.usage
            .send(crate::cost::attempt_row(&o.usage, &t.record.spec));
        if let Some(a) = t.record.status.attempts.last_mut() {
            a.ended_at = Some(
                o.usage
                    .ended_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            );
            a.exit = Some(describe_exit(&o.exit));
            a.reason = Some(o.end_reason.as_str().into());
        }
        let n = o.id.attempt;
        match o.end_reason {
            EndReason::Preempted | EndReason::Interrupted if !t.record.status.cancel_requested => {
                // Back to the queue with its place (submit time) kept; the scheduler already
                // released its resources when it preempted or evicted it.
                if let Some(id) = t.sched.take() {
                    ctl.by_id.remove(&id);
                    if ctl.sched.requeue(id, ms).is_ok() {
                        t.sched = Some(id);
                        ctl.by_id.insert(id, name.to_string());
                    } else {
                        let _ = ctl.sched.finish(id, ms);
                    }
                }
                if t.sched.is_none() {
                    let submitted = u64::try_from(t.record.status.submitted_ms).unwrap_or(0);
                    if let Ok(id) = ctl
                        .sched
                        .submit(convert::sched_job(&t.record.spec), submitted)
                    {
                        t.sched = Some(id);
                        ctl.by_id.insert(id, name.to_string());
                    }
                }
                t.record.status.state = JobState::Pending;
                if let Err(e) = self.stage(name, &mut t, SYSTEM, None) {
                    tracing::warn!(job = name, error = %e, "cannot save job");
                }
                ctl.jobs.insert(name.to_string(), t);
                return;
            }
            _ => {}
        }
        if let Some(id) = t.sched.take() {
            let _ = ctl.sched.finish(id, ms);
            ctl.by_id.remove(&id);
        }
        let (state, msg) = match o.end_reason {
            EndReason::Completed => (Some(JobState::Succeeded), format!("attempt {n} completed")),
            _ if t.record.status.cancel_requested => (
                Some(JobState::Cancelled),
                format!(
                    "cancelled; attempt {n} stopped ({})",
                    describe_exit(&o.exit)
                ),
            ),
            EndReason::Cancel => (Some(JobState::Cancelled), format!("attempt {n} cancelled")),
            EndReason::Timeout | EndReason::Idle => (
                Some(JobState::Failed),
                format!(
                    "attempt {n} stopped: {} ({})",
                    o.end_reason.as_str(),
                    describe_exit(&o.exit)
                ),
            ),
            _ => (
                None,
                format!(
                    "attempt {n} {}: {}",
                    o.end_reason.as_str(),
                    describe_exit(&o.exit)
                ),
            ),
        };
        match state {
            Some(s) => {
                t.record.status.state = s;
                t.record.status.finished_at = Some(now_str());
                t.record.status.message = Some(msg);
                if let Err(e) = self.stage(name, &mut t, SYSTEM, Some("job.finish")) {
                    tracing::warn!(job = name, error = %e, "cannot save job");
                }
            }
            None => self.after_failure(ctl, name, t, &msg).await,
        }
    }

    /// A failed attempt: retry while retries remain, else the job fails (or is lost).
    async fn after_failure(&self, ctl: &mut Ctl, name: &str, mut t: Tracked, msg: &str) {
        // Retries count failed attempts; preempted and interrupted ones are not failures.
        let used = t
            .record
            .status
            .attempts
            .iter()
            .filter(|a| !matches!(a.reason.as_deref(), Some("preempted") | Some("interrupted")))
            .count() as u32;
        let total = t.record.status.attempts.len();
        let lost = t
            .record
            .status
            .attempts
            .last()
            .is_some_and(|a| a.reason.as_deref() == Some("lost"));
        if let Some(id) = t.sched.take() {
            let _ = ctl.sched.finish(id, now_ms());
            ctl.by_id.remove(&id);
        }
        if used <= t.record.spec.max_retries && !t.record.status.cancel_requested {
            let ms = u64::try_from(t.record.status.submitted_ms).unwrap_or(0);
            match ctl.sched.submit(convert::sched_job(&t.record.spec), ms) {
                Ok(id) => {
                    t.sched = Some(id);
                    ctl.by_id.insert(id, name.to_string());
                    t.record.status.state = JobState::Pending;
                    t.record.status.message = Some(format!(
                        "{msg}; retrying ({} of {} retries used)",
                        used, t.record.spec.max_retries
                    ));
                    if let Err(e) = self.stage(name, &mut t, SYSTEM, None) {
                        tracing::warn!(job = name, error = %e, "cannot save job");
                    }
                    ctl.jobs.insert(name.to_string(), t);
                    return;
                }
                Err(r) => {
                    t.record.status.message = Some(format!("{msg}; cannot retry: {}", r.reason));
                }
            }
        } else {
            t.record.status.message = Some(if t.record.spec.max_retries > 0 {
                format!("{msg}; no retries left ({total} attempts, {used} failed)")
            } else {
                msg.to_string()
            });
        }
        t.record.status.state = if lost {
            JobState::Lost
        } else {
            JobState::Failed
        };
        t.record.status.finished_at = Some(now_str());
        if let Err(e) = self.stage(name, &mut t, SYSTEM, Some("job.finish")) {
            tracing::warn!(job = name, error = %e, "cannot save job");
        }
    }

    /// Simulates a spot interruption: node `node` of `pool` is taken away, the attempts on it
    /// are stopped (reason `interrupted`) and their jobs wait again, keeping their place; a
    /// replacement node of the same size joins the pool at once. Admins only.
    pub async fn interrupt_node(
        &self,
        who: &Identity,
        pool: &str,
        node: &str,
    ) -> Result<Vec<String>, CoreError> {
        if !who.is_admin() {
            return Err(CoreError::PermissionDenied(format!(
                "{} (role {}) may not interrupt nodes: requires admin",
                who.actor(),
                who.role
            )));
        }
        let mut ctl = self.ctl.lock().await;
        self.sync_config(&mut ctl).await?;
        let names = self.interrupt_locked(&mut ctl, pool, node, &who.actor())?;
        self.flush_best_effort(&mut ctl).await;
        drop(ctl);
        self.wake.notify_one();
        Ok(names)
    }

    /// The interruption itself, for `interrupt_node` and the chaos loop.
    fn interrupt_locked(
        &self,
        ctl: &mut Ctl,
        pool: &str,
        node: &str,
        actor: &str,
    ) -> Result<Vec<String>, CoreError> {
        let spec = ctl
            .nodes
            .get(pool)
            .and_then(|ns| ns.iter().find(|n| n.name == node))
            .cloned()
            .ok_or_else(|| {
                CoreError::NotFound(format!(
                    "pool {pool:?} has no node {node:?} run by this server"
                ))
            })?;
        let victims = ctl
            .sched
            .remove_node(pool, node)
            .map_err(|e| CoreError::NotFound(e.to_string()))?;
        let names = self.stop_victims(
            ctl,
            victims,
            &format!("interrupted: node {node} of pool {pool} was reclaimed by {actor}"),
        );
        if let Err(e) = ctl.sched.add_node(pool, spec) {
            tracing::warn!(pool, node, error = %e, "cannot add the replacement node");
        }
        Ok(names)
    }

    /// Stops the attempts of jobs whose node went away (reason `interrupted`: they wait
    /// again, keeping their place); returns their names.
    fn stop_victims(&self, ctl: &mut Ctl, victims: Vec<JobId>, message: &str) -> Vec<String> {
        let mut names = Vec::new();
        for v in victims {
            let Some(name) = ctl.by_id.get(&v).cloned() else {
                if ctl.deferred.remove(&v).is_some() {
                    let _ = ctl.sched.requeue(v, now_ms());
                } else if let Some(h) = ctl.hold_mut(v) {
                    h.revoke(message.to_string());
                }
                continue;
            };
            if let Some(t) = ctl.jobs.get_mut(&name) {
                if let Some(a) = t.record.status.attempts.last()
                    && a.ended_at.is_none()
                    && let Err(e) = self.exec.stop_pods(
                        &name,
                        a.n,
                        t.record.spec.nodes.max(1),
                        StopReason::Interrupted,
                        STOP_GRACE,
                    )
                {
                    tracing::warn!(job = %name, error = %e, "cannot stop attempt");
                }
                t.record.status.message = Some(message.to_string());
            }
            names.push(name);
        }
        names
    }

    /// A re-applied pool: nodes it no longer has (or whose size changed) leave the
    /// scheduler, their jobs' attempts are stopped as interrupted and wait again; new nodes
    /// join.
    fn resize_pool(&self, ctl: &mut Ctl, pool: &str, nodes: Vec<plinth_sched::NodeSpec>) {
        let old = ctl.nodes.get(pool).cloned().unwrap_or_default();
        let mut victims = Vec::new();
        for n in &old {
            if nodes.iter().any(|m| m == n) {
                continue;
            }
            match ctl.sched.remove_node(pool, &n.name) {
                Ok(v) => victims.extend(v),
                Err(e) => tracing::warn!(pool, node = %n.name, error = %e, "cannot remove node"),
            }
        }
        for m in &nodes {
            if old.iter().any(|n| n == m) {
                continue;
            }
            if let Err(e) = ctl.sched.add_node(pool, m.clone()) {
                tracing::warn!(pool, node = %m.name, error = %e, "cannot add node");
            }
        }
        tracing::info!(pool, nodes = nodes.len(), "job controller: pool changed");
        ctl.nodes.insert(pool.to_string(), nodes);
        let names = self.stop_victims(
            ctl,
            victims,
            &format!("interrupted: its node left pool {pool} when the pool was changed"),
        );
        if !names.is_empty() {
            tracing::info!(pool, jobs = ?names, "jobs stopped by a pool change wait again");
        }
    }

    /// Chaos testing: each node of each spot pool is interrupted at random, `per_hour` times
    /// an hour on average (a Poisson process), as `plinth pool interrupt` does it.
    async fn chaos_step(&self) {
        let Some(chaos) = &self.chaos else { return };
        let mut ctl = self.ctl.lock().await;
        let picks: Vec<(String, String)> = {
            let mut c = chaos.lock().unwrap_or_else(|p| p.into_inner());
            let dt = c.last.elapsed().as_secs_f64();
            c.last = Instant::now();
            let p = 1.0 - (-c.per_hour / 3600.0 * dt).exp();
            let mut picks = Vec::new();
            for (pool, nodes) in &ctl.nodes {
                if ctl.procurement.get(pool) != Some(&Procurement::Spot) {
                    continue;
                }
                for n in nodes {
                    if c.next() < p {
                        picks.push((pool.clone(), n.name.clone()));
                    }
                }
            }
            picks
        };
        if picks.is_empty() {
            return;
        }
        for (pool, node) in picks {
            match self.interrupt_locked(&mut ctl, &pool, &node, CHAOS) {
                Ok(jobs) if !jobs.is_empty() => {
                    tracing::info!(pool, node, jobs = ?jobs, "chaos: spot node interrupted")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(pool, node, error = %e, "chaos: cannot interrupt"),
            }
        }
        self.flush_best_effort(&mut ctl).await;
        drop(ctl);
        self.wake.notify_one();
    }

    /// What each queue's admitted jobs use, per pool (for the console).
    pub async fn queue_usage(&self) -> Vec<QueueUsage> {
        let ctl = self.ctl.lock().await;
        let mut out = Vec::new();
        for q in ctl.queues.keys() {
            if let Ok(us) = ctl.sched.queue_usage(q) {
                for u in us {
                    out.push(QueueUsage {
                        queue: q.clone(),
                        pool: u.pool,
                        gpus: u.gpus_used,
                        borrowed: u.gpus_borrowed,
                        lent: u.gpus_lent,
                        cpus: u.cpus_used,
                    });
                }
            }
        }
        out
    }
}

/// One queue's use of one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueUsage {
    pub queue: String,
    pub pool: String,
    pub gpus: f64,
    pub borrowed: f64,
    /// Of its nominal quota, what the cohort's borrowers use.
    pub lent: f64,
    pub cpus: f64,
}

fn view(name: &str, t: &Tracked) -> Job {
    Job {
        name: name.to_string(),
        spec: t.record.spec.clone(),
        status: t.record.status.clone(),
        generation: t.generation,
    }
}

fn from_object(o: StoredObject) -> Result<Job, CoreError> {
    let record: JobRecord = serde_json::from_value(o.document.spec)
        .map_err(|e| internal(format!("stored Job {} does not parse: {e}", o.name)))?;
    Ok(Job {
        name: o.name,
        spec: record.spec,
        status: record.status,
        generation: o.generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "command": ["python", "train.py", "--lr", "0.1"],
            "team": "ml",
            "queue": "ml-q",
            "class": "training",
            "nodes": 2,
            "gpus": 0.5,
            "gpuType": "nvidia-h100-80gb",
            "spot": true,
            "checkpointDir": "/tmp/ckpt",
            "maxRetries": 3,
            "maxRuntime": "2h",
            "idleTimeout": "30m",
            "tags": {"project": "p", "env": "dev"},
            "priority": 7,
            "env": {"B": "2", "A": "1 \"quoted\" \u{e9}"}
        }))
        .unwrap_or_else(|e| panic!("spec: {e}"))
    }

    fn attempt(n: u32, ended: bool) -> Attempt {
        Attempt {
            ended_at: ended.then(|| "2026-11-29T10:00:01.000000Z".into()),
            exit: ended.then(|| "code 1".into()),
            gpus: vec!["0:500/1000".into()],
            n,
            node: "node-1".into(),
            pods: vec![AttemptPod {
                gpus: vec!["1".into()],
                node: "node-2".into(),
                rank: 1,
            }],
            pool: "gpu".into(),
            reason: ended.then(|| "failed".into()),
            started_at: "2026-11-29T10:00:00.000000Z".into(),
        }
    }

    /// What `encode_document` gives for the same job through a `serde_json::Value`.
    fn reference(name: &str, record: &JobRecord) -> (String, String) {
        let doc = Document {
            api_version: API_VERSION.into(),
            kind: JOB_KIND.into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec: serde_json::to_value(record).unwrap_or_else(|e| panic!("{e}")),
        };
        let (json, digest) =
            plinth_core::encode_document(&doc).unwrap_or_else(|| panic!("not encodable"));
        assert_eq!(digest, plinth_core::document_digest(&doc));
        (json, digest)
    }

    #[test]
    fn job_documents_encode_canonically() {
        let full = JobStatus {
            admitted_at: Some("2026-11-29T10:00:00.000000Z".into()),
            attempts: vec![attempt(1, true), attempt(2, false)],
            cancel_requested: true,
            finished_at: Some("2026-11-29T10:05:00.000000Z".into()),
            message: Some("attempt 1 failed: code 1".into()),
            state: JobState::Running,
            submitted_at: "2026-11-29T09:59:59.000000Z".into(),
            submitted_by: "token:alice".into(),
            submitted_ms: 1_795_000_000_000,
            wait_reason: Some("queue \"ml-q\" is over quota".into()),
        };
        let bare = JobStatus {
            admitted_at: None,
            attempts: Vec::new(),
            cancel_requested: false,
            finished_at: None,
            message: None,
            state: JobState::Pending,
            submitted_at: "2026-11-29T09:59:59.000000Z".into(),
            submitted_by: "token:alice".into(),
            submitted_ms: 1,
            wait_reason: None,
        };
        for status in [full, bare] {
            let record = JobRecord {
                spec: spec(),
                status,
            };
            let spec_json = canonical_spec(&record.spec).unwrap_or_else(|e| panic!("{e}"));
            let got =
                encode_job("train-7", &spec_json, &record.status).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, reference("train-7", &record));
            // And it reads back as the record it came from.
            let doc: Document = serde_json::from_str(&got.0).unwrap_or_else(|e| panic!("{e}"));
            let back: JobRecord =
                serde_json::from_value(doc.spec).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, record);
        }
    }
}
