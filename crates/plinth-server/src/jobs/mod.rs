//! The job controller: the scheduler (`plinth-sched`) fed from the stored Pools, Queues and Jobs,
//! and the local executor (`plinth-exec`) running admitted jobs as supervised processes.
//!
//! Every state change of a job is one write of its `Job` object (with a precondition on its
//! generation) plus, for submit, cancel, admit and finish, an audit event. Waiting jobs are
//! re-submitted on start with their original submit times, and running attempts are adopted
//! through `Executor::recover`, so a server that is killed loses no accepted job.

pub mod api;
pub mod apply;
mod convert;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use plinth_config::kinds::JOB_KIND;
use plinth_core::{CoreError, Platform, authorize_read, document_digest};
use plinth_exec::{
    AttemptId, AttemptSpec, AttemptStatus, EndReason, ExecError, Executor, ExitKind, GpuSlot,
    IdlePolicy, LogStream, Outcome, RecoveredState, StopReason, SupervisorProgram,
};
use plinth_sched::{Decision, JobId, Scheduler, SchedulerConfig};
use plinth_store::{Batch, Op, Precondition};
use plinth_types::audit::NewAuditEvent;
use plinth_types::job::{
    Attempt, Job, JobRecord, JobSpec, JobState, JobStatus, SubmitJobRequest, parse_duration,
};
use plinth_types::{API_VERSION, Document, Identity, ObjectMeta, Role, StoredObject};
use tokio::sync::{Mutex, Notify};

use crate::metrics::Metrics;

const TICK: Duration = Duration::from_millis(500);
const STOP_GRACE: Duration = Duration::from_secs(5);
const SYSTEM: &str = "system:jobs";

struct Tracked {
    team: String,
    generation: i64,
    created_at: String,
    record: JobRecord,
    sched: Option<JobId>,
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
}

/// The controller, shared by the API handlers and its own loop.
pub struct Jobs {
    platform: Platform,
    exec: Executor,
    ctl: Mutex<Ctl>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("root", &self.exec.root())
            .finish()
    }
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
    pub fn new(
        platform: Platform,
        root: std::path::PathBuf,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Jobs>, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate this program for the supervisor: {e}"))?;
        let exec = Executor::new(
            root,
            SupervisorProgram::new(exe).with_args(["exec-supervisor"]),
        )
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(Jobs {
            platform,
            exec,
            ctl: Mutex::new(Ctl {
                sched: Scheduler::new(SchedulerConfig::default()),
                pools: BTreeMap::new(),
                queues: BTreeMap::new(),
                procurement: BTreeMap::new(),
                nodes: BTreeMap::new(),
                jobs: BTreeMap::new(),
                by_id: HashMap::new(),
            }),
            wake: Notify::new(),
            metrics,
        }))
    }

    /// Recovers stored jobs and running attempts, then runs the loop until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = me.recover().await {
                tracing::error!(error = %e, "job controller: recovery failed");
            }
            loop {
                if let Err(e) = me.tick().await {
                    tracing::warn!(error = %e, "job controller: tick failed");
                }
                let _ = tokio::time::timeout(TICK, me.wake.notified()).await;
            }
        });
    }

    /// Gives new or changed Pools and Queues to the scheduler.
    async fn sync_config(&self, ctl: &mut Ctl) -> Result<(), CoreError> {
        let store = self.platform.store();
        for p in store.list_objects("Pool").await? {
            if ctl.pools.contains_key(&p.name) {
                continue;
            }
            if let Some((spec, nodes, proc_)) = convert::pool(&p) {
                match ctl.sched.add_pool(spec) {
                    Ok(()) => {
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
        for q in store.list_objects("Queue").await? {
            if ctl.queues.get(&q.name) == Some(&q.digest) {
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

    /// Writes one job's record (precondition: the generation we hold), with an audit event.
    async fn save(
        &self,
        name: &str,
        t: &mut Tracked,
        actor: &str,
        action: Option<&str>,
        fresh: bool,
    ) -> Result<(), CoreError> {
        let document = Document {
            api_version: API_VERSION.into(),
            kind: JOB_KIND.into(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..ObjectMeta::default()
            },
            spec: serde_json::to_value(&t.record).map_err(internal)?,
        };
        let digest = document_digest(&document);
        let now = now_str();
        let generation = if fresh { 1 } else { t.generation + 1 };
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
        let precondition = if fresh {
            Precondition::Absent
        } else {
            Precondition::Generation(t.generation)
        };
        let events = match action {
            Some(a) => vec![NewAuditEvent {
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
            }],
            None => Vec::new(),
        };
        self.platform
            .store()
            .commit(Batch {
                ops: vec![Op::PutObject {
                    object,
                    precondition,
                }],
                events,
            })
            .await?;
        t.generation = generation;
        Ok(())
    }

    /// Validates, checks with the scheduler that some pool could ever run it, stores it.
    pub async fn submit(&self, who: &Identity, req: SubmitJobRequest) -> Result<Job, CoreError> {
        self.submit_or_check(who, req, false).await
    }

    /// The checks of `submit` that need neither the store nor the scheduler.
    pub fn precheck(&self, who: &Identity, name: &str, spec: &JobSpec) -> Result<(), CoreError> {
        if who.role < Role::Member || !(who.is_admin() || who.in_team(&spec.team)) {
            return Err(CoreError::PermissionDenied(format!(
                "{} (role {}, team {}) may not submit jobs for team {}: requires member of the team or admin",
                who.actor(),
                who.role,
                who.team.as_deref().unwrap_or("-"),
                spec.team
            )));
        }
        plinth_config::kinds::validate_name(name)
            .map_err(|m| CoreError::invalid(format!("name: {m}")))?;
        convert::validate(spec)
    }

    /// `submit`, or with `dry_run` every check of it (the scheduler's included) and nothing
    /// stored.
    pub async fn submit_or_check(
        &self,
        who: &Identity,
        req: SubmitJobRequest,
        dry_run: bool,
    ) -> Result<Job, CoreError> {
        let spec = req.spec;
        if who.role < Role::Member || !(who.is_admin() || who.in_team(&spec.team)) {
            return Err(CoreError::PermissionDenied(format!(
                "{} (role {}, team {}) may not submit jobs for team {}: requires member of the team or admin",
                who.actor(),
                who.role,
                who.team.as_deref().unwrap_or("-"),
                spec.team
            )));
        }
        let name = match req.name {
            Some(n) => n,
            None => generate_name(&spec.command),
        };
        plinth_config::kinds::validate_name(&name)
            .map_err(|m| CoreError::invalid(format!("name: {m}")))?;
        convert::validate(&spec)?;
        let store = self.platform.store();
        let queue = store
            .get_object("Queue", &spec.queue)
            .await?
            .ok_or_else(|| {
                CoreError::invalid(format!("spec.queue: queue {:?} does not exist", spec.queue))
            })?;
        if queue.team.as_deref() != Some(spec.team.as_str()) {
            return Err(CoreError::invalid(format!(
                "spec.queue: queue {:?} belongs to team {}, not {}",
                spec.queue,
                queue.team.as_deref().unwrap_or("-"),
                spec.team
            )));
        }
        if store.get_object(JOB_KIND, &name).await?.is_some() {
            return Err(CoreError::Conflict(format!("Job {name:?} already exists")));
        }
        let mut ctl = self.ctl.lock().await;
        self.sync_config(&mut ctl).await?;
        if !ctl.queues.contains_key(&spec.queue) {
            return Err(CoreError::invalid(format!(
                "spec.queue: queue {:?} has no quota on a pool this server runs (local pools only)",
                spec.queue
            )));
        }
        let ms = now_ms();
        let id = ctl
            .sched
            .submit(convert::sched_job(&spec), ms)
            .map_err(|r| CoreError::invalid(format!("spec: rejected: {}", r.reason)))?;
        if dry_run {
            let _ = ctl.sched.cancel(id, ms);
        }
        let now = now_str();
        let mut t = Tracked {
            team: spec.team.clone(),
            generation: 0,
            created_at: now.clone(),
            record: JobRecord {
                spec,
                status: JobStatus {
                    state: JobState::Pending,
                    submitted_at: now,
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
        };
        if dry_run {
            return Ok(view(&name, &t));
        }
        if let Err(e) = self
            .save(&name, &mut t, &who.actor(), Some("job.submit"), true)
            .await
        {
            let _ = ctl.sched.cancel(id, ms);
            return Err(e);
        }
        let job = view(&name, &t);
        ctl.by_id.insert(id, name.clone());
        ctl.jobs.insert(name, t);
        drop(ctl);
        self.wake.notify_one();
        Ok(job)
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
        from_object(obj)
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
                if let Err(e) =
                    self.exec
                        .stop(&AttemptId::new(name, n), StopReason::Cancel, STOP_GRACE)
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
        self.save(name, t, &who.actor(), Some("job.cancel"), false)
            .await?;
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
    ) -> Result<(Vec<u8>, u64, bool), CoreError> {
        let job = self.get(who, name).await?;
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
            .read_log(&AttemptId::new(name, n), stream, offset, 1 << 20);
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
                    if let Err(e) = self
                        .save(&name, &mut t, SYSTEM, Some("job.finish"), false)
                        .await
                    {
                        tracing::warn!(job = %name, error = %e, "cannot save job");
                    }
                }
            }
        }
        Ok(())
    }

    /// One pass: config, admissions, preemptions, finished attempts, wait reasons, metrics.
    async fn tick(&self) -> Result<(), CoreError> {
        let mut ctl = self.ctl.lock().await;
        self.sync_config(&mut ctl).await?;
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
                        continue;
                    };
                    self.metrics.jobs.admissions.inc();
                    self.start_attempt(&mut ctl, &name, &pool, &placement).await;
                }
                Decision::Preempted { job, reason, .. } => {
                    self.metrics.jobs.preemptions.inc();
                    let Some(name) = ctl.by_id.get(&job).cloned() else {
                        continue;
                    };
                    if let Some(t) = ctl.jobs.get(&name)
                        && let Some(a) = t.record.status.attempts.last()
                        && a.ended_at.is_none()
                    {
                        let _ = self.exec.stop(
                            &AttemptId::new(&name, a.n),
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
        // Running attempts that ended.
        let running: Vec<(String, u32)> = ctl
            .jobs
            .iter()
            .filter_map(|(n, t)| {
                t.record
                    .status
                    .attempts
                    .last()
                    .filter(|a| a.ended_at.is_none())
                    .map(|a| (n.clone(), a.n))
            })
            .collect();
        for (name, n) in running {
            match self.exec.status(&AttemptId::new(&name, n)) {
                Ok(AttemptStatus::Finished(outcome)) => {
                    if let Some(t) = ctl.jobs.remove(&name) {
                        self.attempt_ended(&mut ctl, &name, t, &outcome).await;
                    }
                }
                Ok(AttemptStatus::Running { .. }) => {}
                Err(e) => tracing::warn!(job = %name, error = %e, "cannot read attempt status"),
            }
        }
        // Wait reasons that changed.
        let Ctl { sched, jobs, .. } = &mut *ctl;
        let mut changed = Vec::new();
        for (name, t) in jobs.iter_mut() {
            if t.record.status.state != JobState::Pending {
                continue;
            }
            let Some(id) = t.sched else { continue };
            let why = sched.why(id).ok().flatten().map(|w| w.message);
            if why.is_some() && why != t.record.status.wait_reason {
                t.record.status.wait_reason = why;
                changed.push(name.clone());
            }
        }
        for name in changed {
            if let Some(t) = jobs.get_mut(&name)
                && let Err(e) = self.save(&name, t, SYSTEM, None, false).await
            {
                tracing::warn!(job = %name, error = %e, "cannot save wait reason");
            }
        }
        self.update_metrics(&ctl);
        self.exec.reap();
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
        let pod = placement.first();
        let node = pod.map(|p| p.node.clone()).unwrap_or_default();
        let gpus: Vec<(u32, u32)> = pod.map(|p| p.gpus.clone()).unwrap_or_default();
        let mut a = AttemptSpec::new(name, n, spec.command.clone());
        a.env = spec.env.clone();
        a.gpus = gpus
            .iter()
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
            .collect();
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
            node,
            gpus: gpus
                .iter()
                .map(|(i, m)| {
                    if *m >= 1000 {
                        i.to_string()
                    } else {
                        format!("{i}:{m}/1000")
                    }
                })
                .collect(),
        });
        // `AlreadyExists`: the server died after starting this attempt and before recording
        // it; the attempt is adopted (its outcome is polled like any other).
        match self.exec.start(a) {
            Ok(_) | Err(ExecError::AlreadyExists { .. }) => {
                t.record.status.state = JobState::Running;
                if let Err(e) = self
                    .save(name, &mut t, SYSTEM, Some("job.admit"), false)
                    .await
                {
                    tracing::warn!(job = name, error = %e, "cannot save job");
                }
                ctl.jobs.insert(name.to_string(), t);
            }
            Err(e) => {
                // The executor recorded the attempt as ended with exec_error.
                let msg = e.to_string();
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
                if let Err(e) = self.save(name, &mut t, SYSTEM, None, false).await {
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
                if let Err(e) = self
                    .save(name, &mut t, SYSTEM, Some("job.finish"), false)
                    .await
                {
                    tracing::warn!(job = name, error = %e, "cannot save job");
                }
            }
            None => self.after_failure(ctl, name, t, &msg).await,
        }
    }

    /// A failed attempt: retry while retries remain, else the job fails (or is lost).
    async fn after_failure(&self, ctl: &mut Ctl, name: &str, mut t: Tracked, msg: &str) {
        let used = t.record.status.attempts.len() as u32;
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
                    if let Err(e) = self.save(name, &mut t, SYSTEM, None, false).await {
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
                format!("{msg}; no retries left ({} attempts)", used)
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
        if let Err(e) = self
            .save(name, &mut t, SYSTEM, Some("job.finish"), false)
            .await
        {
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
        let mut names = Vec::new();
        for v in victims {
            let Some(name) = ctl.by_id.get(&v).cloned() else {
                continue;
            };
            if let Some(t) = ctl.jobs.get_mut(&name) {
                if let Some(a) = t.record.status.attempts.last()
                    && a.ended_at.is_none()
                    && let Err(e) = self.exec.stop(
                        &AttemptId::new(&name, a.n),
                        StopReason::Interrupted,
                        STOP_GRACE,
                    )
                {
                    tracing::warn!(job = %name, error = %e, "cannot stop attempt");
                }
                t.record.status.message = Some(format!(
                    "interrupted: node {node} of pool {pool} was reclaimed by {}",
                    who.actor()
                ));
            }
            names.push(name);
        }
        if let Err(e) = ctl.sched.add_node(pool, spec) {
            tracing::warn!(pool, node, error = %e, "cannot add the replacement node");
        }
        drop(ctl);
        self.wake.notify_one();
        Ok(names)
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
