//! Local replicas of the gateway's deployments: a version whose upstream is `replicas` is run
//! by `plinth serve` as real processes through the executor (rooted at
//! `<data_dir>/replicas`, apart from the jobs' executor), each in its own process group with
//! captured logs, on a free loopback port, stopped with SIGTERM then SIGKILL. A replica gets
//! traffic once its readiness path answers 2xx and is health-checked every 2 s after; one that
//! crashes, fails its checks or never gets ready is replaced (with a back-off).
//!
//! The autoscaler reads each version's load from its `ReplicaPool` (the peak of requests in
//! progress plus waiting since the last tick): more replicas than `targetConcurrency` per
//! replica can carry start at once; fewer are kept after `scaleDownAfterSeconds` of lower
//! load (one replica at a time, drained first); with `minReplicas: 0`, every replica stops
//! after `scaleToZeroAfterSeconds` without a request, and the next request waits in the
//! pool's queue while one starts (a cold start).
//!
//! A deleted deployment stops its processes; a changed `replicas` spec starts replicas of the
//! new spec while the old ready ones keep serving (`outgoing`), and drains those once enough
//! new ones are ready, so a rollout never leaves the version without a replica; server shutdown
//! stops them all. At start, replicas left by a previous run (a `kill -9`, a crash) are found
//! through `Executor::recover`: one whose version still has the spec it was started with is
//! adopted (probed again, then served, metered and scaled like any other, from the
//! `replica.json` written beside it at its start); the others, and any whose version is not
//! known again within 30 s, are stopped. A replica's life becomes usage rows (source `replica`,
//! workload `serving`, its pool, CPU and GPU requests, CPU used) tagged with team, deployment,
//! version and model, priced by the cost engine like a job attempt: while it runs, one row per
//! `replica_usage_interval` (default a minute) for the stretch since the last
//! (`replica/<id>/<n>`), and when it ends one for the rest (`replica/<id>`). How far the rows
//! go, and the rows not yet known to be stored, are kept in `meter.json` in the replica's
//! directory, so a restart neither loses nor double-counts a stretch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use plinth_exec::{
    AttemptId, AttemptSpec, AttemptStatus, Executor, ExitKind, GpuSlot, LogStream, Outcome,
    RecoveredState, StopReason, SupervisorProgram,
};
use plinth_gateway::metrics::ReplicaLabels;
use plinth_gateway::replicas::{Endpoint, ReplicaInfo, ReplicasView};
use plinth_gateway::{Gateway, ReplicaTarget};
use plinth_store::Store;

use crate::jobs::{HoldRequest, HoldState};
use plinth_store::usage::UsageRow;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// The source of replicas' usage rows.
pub const SOURCE_REPLICA: &str = "replica";

const TICK: Duration = Duration::from_millis(250);
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// Failed health checks in a row after which a ready replica is replaced.
const HEALTH_FAILURES: u32 = 3;
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// SIGTERM, then SIGKILL after this long.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A draining replica is stopped once idle, or after this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
const STATES: [&str; 5] = ["starting", "ready", "outgoing", "draining", "stopping"];
/// In a replica's attempt directory: how far its usage has been written.
const METER_FILE: &str = "meter.json";
/// In a replica's attempt directory: what a later run needs to adopt it.
const ADOPT_FILE: &str = "replica.json";
/// How long after a start the replicas of the previous run wait for their version to be known
/// again (the gateway reads its deployments from the store) before they are stopped.
const ADOPT_WAIT: Duration = Duration::from_secs(30);

/// What a replica was started for, written beside it so that the next run of the server can
/// adopt it (after a `kill -9` or a crash) while its version's spec is unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdoptInfo {
    deployment: String,
    version: String,
    /// The replica spec's digest when it started.
    digest: String,
    port: u16,
    gpus: Vec<u32>,
    /// What its usage rows carry.
    meter: plinth_exec::UsageRecord,
    /// The queue whose hold admitted it, where its pool is scheduled (asked for again when it
    /// is adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
}

/// How far a replica's usage has been written as rows.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeterCursor {
    /// End of the last stretch written; `None`: none yet (the first starts with the replica).
    until: Option<DateTime<Utc>>,
    /// CPU-seconds counted in the stretches written.
    cpu_seconds: f64,
    /// Stretches written so far (the next one's number is this plus one).
    parts: u32,
    /// Rows written here but not yet known to be stored; sent again until they are (the store
    /// takes a row it already holds as a no-op).
    pending: Vec<UsageRow>,
}

fn read_cursor(dir: &std::path::Path) -> MeterCursor {
    std::fs::read(dir.join(METER_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes `value` as `dir/file` through a temporary file and a rename, so a crash leaves the
/// old or the new one.
fn write_json(dir: &std::path::Path, file: &str, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = dir.join(format!("{file}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, dir.join(file))
}

fn write_cursor(dir: &std::path::Path, c: &MeterCursor) -> std::io::Result<()> {
    write_json(dir, METER_FILE, c)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    /// Ready and serving the previous spec of its version until enough replicas of the new
    /// spec are ready; then it drains.
    Outgoing,
    Draining(Instant),
    Stopping,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Outgoing => "outgoing",
            State::Draining(_) => "draining",
            State::Stopping => "stopping",
        }
    }
}

struct Replica {
    id: AttemptId,
    port: u16,
    pid: u32,
    started: Instant,
    started_at: String,
    state: State,
    endpoint: Arc<Endpoint>,
    gpus: Vec<u32>,
    last_check: Instant,
    health_failures: u32,
    /// What each usage row of this replica carries (pool, procurement, tags, start); `None`
    /// for a replica of a previous run, which is only stopped.
    meter: Option<plinth_exec::UsageRecord>,
    /// When its usage so far was last written.
    metered_at: Instant,
    /// Its capacity is held through the job scheduler (released when it ends).
    held: bool,
}

struct Group {
    digest: String,
    target: ReplicaTarget,
    replicas: Vec<Replica>,
    low_since: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
    restarts: u64,
    last_problem: Option<String>,
    desired: u32,
    /// Ids of the endpoints last given to the pool.
    published: Vec<String>,
    /// The id of the next replica while its hold waits for the scheduler.
    pending: Option<String>,
    /// Why it waits, shown as the last problem meanwhile.
    waiting: Option<String>,
}

#[derive(Default)]
struct Ctl {
    groups: BTreeMap<(String, String), Group>,
    /// Replicas being stopped that belong to no group any more (a deleted deployment, a
    /// changed spec, a previous run), until their outcome is recorded.
    leftovers: Vec<Replica>,
    gpus_in_use: BTreeSet<u32>,
    /// Label sets of the replica gauge set last tick.
    gauges: BTreeSet<(String, String)>,
    /// Replicas of the previous run still running, with what they were started for, until
    /// their version takes them or `adopt_until` passes.
    adoptable: Vec<(AdoptInfo, Replica)>,
    adopt_until: Option<Instant>,
}

/// The start of a replica's last problem while it waits for the scheduler.
const WAITING: &str = "waiting for admission";

/// What one try to start a replica came to.
enum Start {
    Started(Box<Replica>),
    /// Its hold waits for the scheduler (why).
    Waiting(String),
}

/// What the scheduler said about a replica's capacity.
enum Admission {
    /// Its pool is not scheduled: it runs outside the scheduler's books.
    Unscheduled,
    Placed(Placed),
    /// Waiting (why).
    Waiting(String),
}

/// Where the scheduler put a replica.
struct Placed {
    queue: String,
    pool: String,
    node: String,
    gpus: Vec<GpuSlot>,
}

/// The replica controller of `plinth serve`.
pub struct Replicas {
    exec: Arc<Executor>,
    gateway: Gateway,
    server: Arc<crate::gateway::ServerGateway>,
    store: Store,
    /// The job controller, whose scheduler admits replicas on the pools it runs.
    jobs: Option<Arc<crate::jobs::Jobs>>,
    ctl: Mutex<Ctl>,
    stopping: AtomicBool,
    /// How often a running replica's usage so far is written.
    usage_interval: Duration,
}

fn now_str() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

/// A stable digest of what a replica runs: a change replaces the processes.
fn digest(spec: &plinth_gateway::ReplicaSpec) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        serde_json::to_vec(spec).unwrap_or_default(),
    ))
}

/// The executor id of a new replica: `r-<deployment>-<version>-<random>` (≤ 128 characters).
fn new_id(deployment: &str, version: &str) -> String {
    let rand = uuid::Uuid::now_v7().simple().to_string();
    let tail = &rand[rand.len() - 8..];
    let id = format!("r-{deployment}-{version}-{tail}");
    if id.len() <= 128 && !deployment.starts_with('.') {
        id
    } else {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(format!("{deployment}/{version}")));
        format!("r-{}-{tail}", &h[..16])
    }
}

/// Whether `GET http://127.0.0.1:PORT{path}` answers 2xx within a second.
async fn probe(port: u16, path: &str) -> bool {
    let check = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 64];
        while buf.len() < 12 {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code = line.split_whitespace().nth(1)?.parse::<u16>().ok()?;
        Some((200..300).contains(&code))
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, check).await,
        Ok(Some(true))
    )
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn describe_exit(exit: &ExitKind) -> String {
    match exit {
        ExitKind::Code(c) => format!("exited with code {c}"),
        ExitKind::Signal(s) => format!("was killed by signal {s}"),
        ExitKind::ExecFailed(m) => format!("could not start: {m}"),
        ExitKind::Lost => "was lost".into(),
    }
}

/// The usage row of a stretch of one replica's life as the executor metered it: the last
/// stretch (or the whole life) when `part` is `None` (id `replica/<id>`, with the end reason),
/// else running stretch number `part` (id `replica/<id>/<part>`).
pub fn replica_row(u: &plinth_exec::UsageRecord, part: Option<u32>) -> UsageRow {
    let per_second = |x: f64| {
        if u.wall_seconds > 0.0 && x.is_finite() {
            (x / u.wall_seconds).max(0.0)
        } else {
            0.0
        }
    };
    let tag_f64 = |k: &str| {
        u.tags
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(0.0)
    };
    UsageRow {
        source: SOURCE_REPLICA.into(),
        id: match part {
            None => format!("replica/{}", u.job_id),
            Some(n) => format!("replica/{}/{n}", u.job_id),
        },
        workload: "serving".into(),
        workload_name: u
            .tags
            .get("deployment")
            .cloned()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| u.job_id.clone()),
        attempt: 0,
        pool: u.pool.clone(),
        procurement: plinth_cost::procurement_name(u.procurement).into(),
        start: crate::cost::micros(u.started_at),
        end: crate::cost::micros(u.ended_at.max(u.started_at)),
        request_gpus: per_second(u.gpu_seconds),
        request_cpus: tag_f64("cpus"),
        request_memory_gib: tag_f64("memoryGib"),
        usage_gpus: 0.0,
        usage_cpus: per_second(u.cpu_seconds),
        usage_memory_gib: 0.0,
        tags: u.tags.clone(),
        model_version: u.tags.get("version").cloned(),
        inferences: 0,
        end_reason: part.is_none().then(|| u.end_reason.as_str().into()),
    }
}

/// `u` (a whole life) from `from` on: what is left after the stretches already written, which
/// counted `cpu_before` CPU-seconds. The GPUs are held all along, so their seconds scale with
/// the time.
fn rest_of(
    u: &plinth_exec::UsageRecord,
    from: DateTime<Utc>,
    cpu_before: f64,
) -> plinth_exec::UsageRecord {
    let from = from.clamp(u.started_at, u.ended_at.max(u.started_at));
    let gpus = if u.wall_seconds > 0.0 {
        u.gpu_seconds / u.wall_seconds
    } else {
        0.0
    };
    let wall = (u.ended_at - from).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
    plinth_exec::UsageRecord {
        started_at: from,
        wall_seconds: wall,
        gpu_seconds: gpus * wall,
        cpu_seconds: (u.cpu_seconds - cpu_before).max(0.0),
        ..u.clone()
    }
}

impl Replicas {
    /// Opens the executor under `root` and starts the controller: replicas left by a previous
    /// run are stopped first. A running replica's usage is written every `usage_interval`.
    pub fn start(
        store: Store,
        server: Arc<crate::gateway::ServerGateway>,
        root: PathBuf,
        usage_interval: Duration,
        jobs: Option<Arc<crate::jobs::Jobs>>,
    ) -> Result<Arc<Replicas>, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate this program for the supervisor: {e}"))?;
        let exec = Executor::new(
            root,
            SupervisorProgram::new(exe).with_args(["exec-supervisor"]),
        )
        .map_err(|e| e.to_string())?;
        let me = Arc::new(Replicas {
            exec: Arc::new(exec),
            gateway: server.gateway.clone(),
            server,
            store,
            jobs,
            ctl: Mutex::new(Ctl::default()),
            stopping: AtomicBool::new(false),
            usage_interval,
        });
        let run = Arc::clone(&me);
        tokio::spawn(async move {
            run.recover().await;
            let demand = run.gateway.replica_demand();
            while !run.stopping.load(Ordering::Relaxed) {
                run.tick().await;
                let _ = tokio::time::timeout(TICK, demand.notified()).await;
            }
        });
        Ok(me)
    }

    /// Stops every replica (SIGTERM, SIGKILL after the grace) and records their usage; waits
    /// at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut ctl = self.ctl.lock().await;
        let groups = std::mem::take(&mut ctl.groups);
        for (_, g) in groups {
            g.target.pool.set_endpoints(Vec::new());
            for r in g.replicas {
                self.retire(&mut ctl, r);
            }
        }
        for (_, r) in std::mem::take(&mut ctl.adoptable) {
            self.retire(&mut ctl, r);
        }
        let deadline = Instant::now() + limit;
        while !ctl.leftovers.is_empty() && Instant::now() < deadline {
            self.poll_leftovers(&mut ctl).await;
            if !ctl.leftovers.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if !ctl.leftovers.is_empty() {
            tracing::warn!(
                replicas = ctl.leftovers.len(),
                "replicas still stopping at shutdown; their supervisors finish the stop"
            );
        }
    }

    /// Stops what a previous run left and records the usage of what ended meanwhile.
    async fn recover(&self) {
        let exec = Arc::clone(&self.exec);
        let found = match tokio::task::spawn_blocking(move || exec.recover()).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "replicas: cannot recover the previous run's replicas");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "replicas: recovery panicked");
                return;
            }
        };
        let mut ctl = self.ctl.lock().await;
        ctl.adopt_until = Some(Instant::now() + ADOPT_WAIT);
        for r in found {
            match r.state {
                RecoveredState::Adopted(a) => {
                    let info = self
                        .exec
                        .attempt_dir(&a.id)
                        .ok()
                        .and_then(|d| std::fs::read(d.join(ADOPT_FILE)).ok())
                        .and_then(|b| serde_json::from_slice::<AdoptInfo>(&b).ok());
                    let (port, url) = info
                        .as_ref()
                        .map(|i| (i.port, format!("http://127.0.0.1:{}", i.port)))
                        .unwrap_or_default();
                    let replica = Replica {
                        id: a.id.clone(),
                        port,
                        pid: a.pid,
                        started: Instant::now(),
                        started_at: a.started_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                        // One to adopt is probed again before it gets traffic.
                        state: if info.is_some() {
                            State::Starting
                        } else {
                            State::Ready
                        },
                        endpoint: Endpoint::new(a.id.job_id.clone(), url),
                        gpus: info.as_ref().map(|i| i.gpus.clone()).unwrap_or_default(),
                        last_check: Instant::now(),
                        health_failures: 0,
                        meter: info.as_ref().map(|i| i.meter.clone()),
                        metered_at: Instant::now(),
                        held: false,
                    };
                    if let Some(info) = info {
                        let mut replica = replica;
                        replica.held = self.hold_again(&a.id.job_id, &info).await;
                        tracing::info!(replica = %a.id.job_id, pid = a.pid, deployment = %info.deployment, version = %info.version, "replicas: a replica of the previous run still runs; its version adopts it if its spec is unchanged");
                        ctl.gpus_in_use.extend(info.gpus.iter().copied());
                        ctl.adoptable.push((info, replica));
                        continue;
                    }
                    tracing::info!(replica = %a.id.job_id, pid = a.pid, "replicas: stopping a replica of the previous run");
                    self.retire(&mut ctl, replica);
                }
                RecoveredState::Exited(o) | RecoveredState::Lost(o) => {
                    self.ended(&o).await;
                }
            }
        }
    }

    /// Asks the scheduler again for the capacity of a replica of the previous run that was
    /// admitted through a queue, so jobs do not get its GPUs; the scheduler places it anew.
    /// One that no longer fits keeps running outside its books (like an adopted job).
    async fn hold_again(&self, id: &str, info: &AdoptInfo) -> bool {
        let (Some(jobs), Some(queue)) = (&self.jobs, &info.queue) else {
            return false;
        };
        let tag = |k: &str| info.meter.tags.get(k).cloned().unwrap_or_default();
        let req = HoldRequest {
            holder: id.to_string(),
            team: tag("team"),
            queue: Some(queue.clone()),
            pool: info.meter.pool.clone(),
            gpus: u32::try_from(info.gpus.len()).unwrap_or(u32::MAX),
            cpus: tag("cpus").parse().unwrap_or(0.0),
            memory_gib: tag("memoryGib").parse().unwrap_or(0.0),
        };
        match jobs.hold(&req).await {
            HoldState::Rejected { reason } => {
                tracing::warn!(replica = %id, %reason, "replicas: an adopted replica no longer fits its queue; it runs unaccounted");
                false
            }
            _ => true,
        }
    }

    /// Gives a replica's held capacity back to the scheduler.
    async fn release(&self, r: &Replica) {
        if r.held
            && let Some(jobs) = &self.jobs
        {
            jobs.release(&r.id.job_id).await;
        }
    }

    /// Records an ended replica's usage and removes its directory (kept when the row could
    /// not be stored, so the next start tries again).
    async fn ended(&self, o: &Outcome) {
        let dir = self.exec.attempt_dir(&o.id).ok();
        let cursor = dir.as_deref().map(read_cursor).unwrap_or_default();
        let last = match cursor.until {
            Some(from) => rest_of(&o.usage, from, cursor.cpu_seconds),
            None => o.usage.clone(),
        };
        let mut rows = cursor.pending;
        rows.push(replica_row(&last, None));
        match self.store.record_usage(&rows).await {
            Ok(_) => {
                if let Some(parent) = dir.as_deref().and_then(std::path::Path::parent) {
                    let _ = std::fs::remove_dir_all(parent);
                }
            }
            Err(e) => {
                tracing::warn!(replica = %o.id.job_id, error = %e, "replicas: usage not stored yet; kept for the next start");
            }
        }
    }

    /// Writes a running replica's usage since the last stretch as one row, once per interval:
    /// the stretch up to the executor's latest sample, the replica's GPUs held throughout and
    /// the CPU it used meanwhile. The cursor file is written before the store, so a crash in
    /// between sends the same row again.
    async fn meter(&self, r: &mut Replica, snapshot: Option<&plinth_exec::Snapshot>) {
        let (Some(base), Some(s)) = (&r.meter, snapshot) else {
            return;
        };
        if r.metered_at.elapsed() < self.usage_interval {
            return;
        }
        r.metered_at = Instant::now();
        let Ok(dir) = self.exec.attempt_dir(&r.id) else {
            return;
        };
        let mut c = read_cursor(&dir);
        let from = c.until.unwrap_or(base.started_at);
        let wall = (s.sampled_at - from).num_microseconds().unwrap_or(0) as f64 / 1e6;
        if wall > 0.0 {
            let stretch = plinth_exec::UsageRecord {
                started_at: from,
                ended_at: s.sampled_at,
                wall_seconds: wall,
                gpu_seconds: r.gpus.len() as f64 * wall,
                cpu_seconds: (s.cpu_seconds - c.cpu_seconds).max(0.0),
                ..base.clone()
            };
            c.parts += 1;
            c.pending.push(replica_row(&stretch, Some(c.parts)));
            c.until = Some(s.sampled_at);
            c.cpu_seconds = s.cpu_seconds.max(c.cpu_seconds);
            if let Err(e) = write_cursor(&dir, &c) {
                tracing::warn!(replica = %r.id.job_id, error = %e, "replicas: cannot write the usage cursor; retrying");
                return;
            }
        }
        if c.pending.is_empty() {
            return;
        }
        match self.store.record_usage(&c.pending).await {
            Ok(_) => {
                c.pending.clear();
                if let Err(e) = write_cursor(&dir, &c) {
                    tracing::warn!(replica = %r.id.job_id, error = %e, "replicas: cannot write the usage cursor");
                }
            }
            Err(e) => {
                tracing::warn!(replica = %r.id.job_id, error = %e, "replicas: usage not stored yet; sent again next time");
            }
        }
    }

    /// Asks a replica to stop and keeps it until its outcome is recorded.
    fn retire(&self, ctl: &mut Ctl, mut r: Replica) {
        if r.state != State::Stopping {
            if let Err(e) = self.exec.stop(&r.id, StopReason::Cancel, STOP_GRACE) {
                tracing::warn!(replica = %r.id.job_id, error = %e, "replicas: cannot stop");
            }
            r.state = State::Stopping;
        }
        ctl.leftovers.push(r);
    }

    async fn poll_leftovers(&self, ctl: &mut Ctl) {
        let mut keep = Vec::new();
        for r in std::mem::take(&mut ctl.leftovers) {
            match self.exec.status(&r.id) {
                Ok(AttemptStatus::Finished(o)) => {
                    for g in &r.gpus {
                        ctl.gpus_in_use.remove(g);
                    }
                    self.release(&r).await;
                    self.ended(&o).await;
                }
                Ok(AttemptStatus::Running { .. }) => keep.push(r),
                Err(e) => {
                    tracing::warn!(replica = %r.id.job_id, error = %e, "replicas: lost track of a stopping replica");
                    for g in &r.gpus {
                        ctl.gpus_in_use.remove(g);
                    }
                    self.release(&r).await;
                }
            }
        }
        ctl.leftovers = keep;
    }

    async fn tick(&self) {
        let mut guard = self.ctl.lock().await;
        let ctl = &mut *guard;
        let targets: BTreeMap<(String, String), ReplicaTarget> = self
            .gateway
            .replica_targets()
            .into_iter()
            .map(|t| ((t.deployment.clone(), t.version.clone()), t))
            .collect();
        // Deleted deployments: stop the processes. Changed replica specs: the old ready
        // replicas keep serving (as outgoing) until the new ones are ready; the rest stop.
        let old: Vec<(String, String)> = ctl
            .groups
            .iter()
            .filter(|(k, g)| {
                targets.get(*k).is_none_or(|t| {
                    digest(&t.spec) != g.digest || !Arc::ptr_eq(&t.pool, &g.target.pool)
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut outgoing: BTreeMap<(String, String), Vec<Replica>> = BTreeMap::new();
        for k in old {
            if let Some(g) = ctl.groups.remove(&k) {
                if let (Some(p), Some(jobs)) = (&g.pending, &self.jobs) {
                    jobs.release(p).await;
                }
                let changed = targets.contains_key(&k);
                tracing::info!(deployment = %k.0, version = %k.1, replicas = g.replicas.len(), changed, "replicas: replacing the replicas of a changed version, or stopping those of a deleted one");
                g.target.pool.set_endpoints(Vec::new());
                for mut r in g.replicas {
                    if changed && matches!(r.state, State::Ready | State::Outgoing) {
                        r.state = State::Outgoing;
                        outgoing.entry(k.clone()).or_default().push(r);
                    } else {
                        self.retire(ctl, r);
                    }
                }
            }
        }
        for (k, t) in targets {
            let carried = outgoing.remove(&k).unwrap_or_default();
            let g = ctl.groups.entry(k).or_insert_with(|| Group {
                digest: digest(&t.spec),
                target: t.clone(),
                replicas: carried,
                low_since: None,
                failures: 0,
                retry_at: None,
                restarts: 0,
                last_problem: None,
                desired: 0,
                published: Vec::new(),
                pending: None,
                waiting: None,
            });
            // Autoscaling and load-balancing changes apply without a restart.
            g.target = t;
        }
        self.adopt(ctl);
        self.poll_leftovers(ctl).await;
        let keys: Vec<(String, String)> = ctl.groups.keys().cloned().collect();
        // Only replicas admitted by the scheduler can have their capacity taken back.
        let any_held = ctl
            .groups
            .values()
            .any(|g| g.replicas.iter().any(|r| r.held));
        let revoked: HashMap<String, String> = match &self.jobs {
            Some(j) if any_held => j.revoked().await.into_iter().collect(),
            _ => HashMap::new(),
        };
        for k in keys {
            self.reconcile(ctl, &k, &revoked).await;
        }
        self.publish_metrics(ctl);
    }

    /// Gives the previous run's replicas to their versions where the spec they were started
    /// with is still the version's; stops those whose version changed, and the rest once
    /// `ADOPT_WAIT` has passed.
    fn adopt(&self, ctl: &mut Ctl) {
        if ctl.adoptable.is_empty() {
            return;
        }
        let expired = ctl.adopt_until.is_none_or(|t| Instant::now() >= t);
        for (info, r) in std::mem::take(&mut ctl.adoptable) {
            let key = (info.deployment.clone(), info.version.clone());
            match ctl.groups.get_mut(&key) {
                Some(g) if g.digest == info.digest => {
                    tracing::info!(deployment = %key.0, version = %key.1, replica = %r.id.job_id, pid = r.pid, port = r.port, "replicas: adopted a replica of the previous run");
                    g.replicas.push(r);
                }
                Some(_) => {
                    tracing::info!(deployment = %key.0, version = %key.1, replica = %r.id.job_id, "replicas: stopping a replica of the previous run: its version's spec changed");
                    self.retire(ctl, r);
                }
                None if expired => {
                    tracing::info!(deployment = %key.0, version = %key.1, replica = %r.id.job_id, "replicas: stopping a replica of the previous run: its version is gone");
                    self.retire(ctl, r);
                }
                None => ctl.adoptable.push((info, r)),
            }
        }
    }

    async fn reconcile(
        &self,
        ctl: &mut Ctl,
        key: &(String, String),
        revoked: &HashMap<String, String>,
    ) {
        let Some(mut g) = ctl.groups.remove(key) else {
            return;
        };
        // 1. Where each replica stands.
        let mut live = Vec::new();
        for mut r in std::mem::take(&mut g.replicas) {
            match self.exec.status(&r.id) {
                Ok(AttemptStatus::Finished(o)) => {
                    for i in &r.gpus {
                        ctl.gpus_in_use.remove(i);
                    }
                    self.release(&r).await;
                    if !matches!(r.state, State::Stopping) {
                        let stderr = self
                            .exec
                            .read_log(&r.id, LogStream::Stderr, 0, 64 * 1024)
                            .map(|c| String::from_utf8_lossy(&c.data).into_owned())
                            .unwrap_or_default();
                        let tail: String = stderr
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect();
                        let msg = format!(
                            "replica {} {}{}",
                            r.id.job_id,
                            describe_exit(&o.exit),
                            if tail.is_empty() {
                                String::new()
                            } else {
                                format!(": {tail}")
                            }
                        );
                        tracing::warn!(deployment = %key.0, version = %key.1, problem = %msg, "replicas: replica ended; replacing it");
                        g.restarts += 1;
                        g.failures += 1;
                        g.last_problem = Some(msg);
                        let backoff =
                            Duration::from_millis((250u64 << g.failures.min(7)).min(30_000));
                        g.retry_at = Some(Instant::now() + backoff);
                    }
                    self.ended(&o).await;
                    continue;
                }
                Ok(AttemptStatus::Running { snapshot, .. }) => {
                    self.meter(&mut r, snapshot.as_ref()).await;
                }
                Err(e) => {
                    tracing::warn!(replica = %r.id.job_id, error = %e, "replicas: lost track of a replica");
                    self.release(&r).await;
                    continue;
                }
            }
            if let Some(reason) = revoked.get(&r.id.job_id)
                && r.state != State::Stopping
            {
                let msg = format!("replica {} stopped: {reason}", r.id.job_id);
                tracing::warn!(deployment = %key.0, version = %key.1, problem = %msg, "replicas: the scheduler took a replica's capacity back");
                g.restarts += 1;
                g.last_problem = Some(msg);
                self.retire(ctl, r);
                continue;
            }
            let path = g.target.spec.readiness_path.clone();
            match r.state {
                State::Starting => {
                    if probe(r.port, &path).await {
                        tracing::info!(deployment = %key.0, version = %key.1, replica = %r.id.job_id, port = r.port, seconds = r.started.elapsed().as_secs_f64(), "replicas: replica ready");
                        r.state = State::Ready;
                        r.last_check = Instant::now();
                        g.failures = 0;
                    } else if r.started.elapsed()
                        > Duration::from_secs(g.target.spec.start_timeout_seconds)
                    {
                        let msg = format!(
                            "replica {} was not ready ({path} on port {}) within {} s",
                            r.id.job_id, r.port, g.target.spec.start_timeout_seconds
                        );
                        tracing::warn!(deployment = %key.0, version = %key.1, problem = %msg, "replicas: replacing a replica");
                        g.restarts += 1;
                        g.failures += 1;
                        g.last_problem = Some(msg);
                        self.retire(ctl, r);
                        continue;
                    }
                }
                State::Ready | State::Outgoing => {
                    if r.last_check.elapsed() >= HEALTH_EVERY {
                        r.last_check = Instant::now();
                        if probe(r.port, &path).await {
                            r.health_failures = 0;
                        } else {
                            r.health_failures += 1;
                            if r.health_failures >= HEALTH_FAILURES {
                                let msg = format!(
                                    "replica {} failed {HEALTH_FAILURES} health checks ({path} on port {})",
                                    r.id.job_id, r.port
                                );
                                tracing::warn!(deployment = %key.0, version = %key.1, problem = %msg, "replicas: replacing a replica");
                                g.restarts += 1;
                                g.last_problem = Some(msg);
                                self.retire(ctl, r);
                                continue;
                            }
                        }
                    }
                }
                State::Draining(since) => {
                    if r.endpoint.in_flight() == 0 || since.elapsed() > DRAIN_LIMIT {
                        self.retire(ctl, r);
                        continue;
                    }
                }
                State::Stopping => {}
            }
            live.push(r);
        }
        g.replicas = live;

        // 2. How many should run.
        let a = g.target.autoscaling.clone();
        let (peak, _arrivals) = g.target.pool.take_load();
        let running = g
            .replicas
            .iter()
            .filter(|r| matches!(r.state, State::Starting | State::Ready))
            .count() as u32;
        let need = (peak as f64 / a.target_concurrency).ceil() as u32;
        let idle_ms = now_ms().saturating_sub(g.target.pool.last_request_ms());
        let to_zero = a
            .scale_to_zero_after()
            .is_some_and(|s| idle_ms >= s.saturating_mul(1000) && peak == 0);
        let floor = if a.min_replicas > 0 {
            a.min_replicas
        } else if to_zero || running == 0 {
            0
        } else {
            1
        };
        let desired = need.max(floor).min(a.max());
        g.desired = desired;
        if desired > running {
            g.low_since = None;
            if g.retry_at.is_none_or(|t| Instant::now() >= t) {
                g.retry_at = None;
                for _ in running..desired {
                    match self.start_replica(ctl, &mut g).await {
                        Ok(Start::Started(r)) => {
                            tracing::info!(deployment = %key.0, version = %key.1, replica = %r.id.job_id, pid = r.pid, port = r.port, "replicas: replica started");
                            g.waiting = None;
                            g.replicas.push(*r);
                        }
                        Ok(Start::Waiting(msg)) => {
                            g.waiting = Some(msg);
                            break;
                        }
                        Err(msg) => {
                            g.waiting = None;
                            tracing::warn!(deployment = %key.0, version = %key.1, problem = %msg, "replicas: cannot start a replica");
                            // The old spec's replicas may hold what the new one needs (GPUs):
                            // they give way, and the next try starts the new one.
                            for r in &mut g.replicas {
                                if r.state == State::Outgoing {
                                    r.state = State::Draining(Instant::now());
                                }
                            }
                            g.restarts += 1;
                            g.failures += 1;
                            g.last_problem = Some(msg);
                            g.retry_at = Some(
                                Instant::now()
                                    + Duration::from_millis(
                                        (250u64 << g.failures.min(7)).min(30_000),
                                    ),
                            );
                            break;
                        }
                    }
                }
            }
        } else if desired < running {
            self.drop_pending(&mut g).await;
            if to_zero {
                tracing::info!(deployment = %key.0, version = %key.1, idle_seconds = idle_ms / 1000, "replicas: scaling to zero");
                for r in &mut g.replicas {
                    if matches!(r.state, State::Starting | State::Ready | State::Outgoing) {
                        r.state = State::Draining(Instant::now());
                    }
                }
                g.low_since = None;
            } else {
                let since = *g.low_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(a.scale_down_after_seconds) {
                    // One at a time: a starting one first, else the least busy ready one.
                    let pick = g
                        .replicas
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| matches!(r.state, State::Starting | State::Ready))
                        .min_by_key(|(_, r)| (r.state == State::Ready, r.endpoint.in_flight()))
                        .map(|(i, _)| i);
                    if let Some(i) = pick {
                        tracing::info!(deployment = %key.0, version = %key.1, replica = %g.replicas[i].id.job_id, desired, "replicas: scaling down");
                        g.replicas[i].state = State::Draining(Instant::now());
                    }
                    g.low_since = Some(Instant::now());
                }
            }
        } else {
            g.low_since = None;
            self.drop_pending(&mut g).await;
        }

        // 3. Once enough replicas of the new spec are ready, the outgoing ones drain.
        let new_ready = g
            .replicas
            .iter()
            .filter(|r| r.state == State::Ready)
            .count() as u32;
        if new_ready >= g.desired.max(1) {
            for r in &mut g.replicas {
                if r.state == State::Outgoing {
                    tracing::info!(deployment = %key.0, version = %key.1, replica = %r.id.job_id, "replicas: the new spec is ready; draining a replica of the old one");
                    r.state = State::Draining(Instant::now());
                }
            }
        }
        // 4. Route to the ready ones (the outgoing ones too, until then); publish the view.
        let ready: Vec<Arc<Endpoint>> = g
            .replicas
            .iter()
            .filter(|r| matches!(r.state, State::Ready | State::Outgoing))
            .map(|r| Arc::clone(&r.endpoint))
            .collect();
        let ids: Vec<String> = ready.iter().map(|e| e.id.clone()).collect();
        if ids != g.published {
            g.target.pool.set_endpoints(ready);
            g.published = ids;
        }
        g.target.pool.set_view(ReplicasView {
            desired: g.desired,
            min: a.min_replicas,
            max: a.max(),
            ready: g.published.len() as u32,
            queued: 0,
            restarts: g.restarts,
            last_problem: g.waiting.clone().or_else(|| g.last_problem.clone()),
            replicas: g
                .replicas
                .iter()
                .map(|r| ReplicaInfo {
                    id: r.id.job_id.clone(),
                    state: r.state.name().into(),
                    pid: r.pid,
                    port: r.port,
                    in_flight: r.endpoint.in_flight(),
                    started_at: r.started_at.clone(),
                    gpus: r.gpus.clone(),
                })
                .collect(),
        });
        ctl.groups.insert(key.clone(), g);
    }

    /// The GPU count of the replica's pool (its stored Pool: nodes × accelerators).
    async fn pool_info(&self, pool: &str) -> (u32, plinth_exec::Procurement) {
        match self.store.get_object("Pool", pool).await {
            Ok(Some(o)) => {
                match serde_json::from_value::<plinth_types::spec::PoolSpec>(o.document.spec) {
                    Ok(s) => (
                        s.accelerator.map_or(0, |a| a.count.saturating_mul(s.nodes)),
                        s.procurement,
                    ),
                    Err(_) => (0, plinth_exec::Procurement::OnDemand),
                }
            }
            _ => (0, plinth_exec::Procurement::OnDemand),
        }
    }

    /// A hold still waiting when no replica more is wanted is given back.
    async fn drop_pending(&self, g: &mut Group) {
        g.waiting = None;
        if let (Some(p), Some(jobs)) = (g.pending.take(), &self.jobs) {
            jobs.release(&p).await;
        }
    }

    /// Where the version's pool is scheduled, asks the job scheduler for the replica's
    /// capacity first: the queue, pool and GPUs it was given, or why it waits.
    async fn admit(&self, g: &mut Group, id: &str) -> Result<Admission, String> {
        let Some(jobs) = &self.jobs else {
            return Ok(Admission::Unscheduled);
        };
        let t = &g.target;
        let spec = &t.spec;
        let req = HoldRequest {
            holder: id.to_string(),
            team: self.server.team_of(&t.deployment).unwrap_or_default(),
            queue: spec.queue.clone(),
            pool: spec.pool.clone(),
            gpus: spec.resources.gpus,
            cpus: spec.resources.cpus,
            memory_gib: spec.resources.memory_gib,
        };
        match jobs.hold(&req).await {
            HoldState::Unscheduled => Ok(Admission::Unscheduled),
            HoldState::Waiting { queue, reason } => {
                g.pending = Some(id.to_string());
                Ok(Admission::Waiting(format!(
                    "{WAITING} in queue `{queue}`: {reason}"
                )))
            }
            HoldState::Held {
                queue,
                pool,
                node,
                gpus,
            } => {
                g.pending = None;
                Ok(Admission::Placed(Placed {
                    queue,
                    pool,
                    node,
                    gpus,
                }))
            }
            HoldState::Revoked { reason } => {
                g.pending = None;
                jobs.release(id).await;
                Err(format!("replica {id}: {reason}"))
            }
            HoldState::Rejected { reason } => {
                g.pending = None;
                Err(format!(
                    "replica of {}/{} cannot be admitted: {reason}",
                    t.deployment, t.version
                ))
            }
        }
    }

    async fn start_replica(&self, ctl: &mut Ctl, g: &mut Group) -> Result<Start, String> {
        let job_id = g
            .pending
            .clone()
            .unwrap_or_else(|| new_id(&g.target.deployment, &g.target.version));
        let placed = match self.admit(g, &job_id).await? {
            Admission::Unscheduled => None,
            Admission::Placed(p) => Some(p),
            Admission::Waiting(why) => return Ok(Start::Waiting(why)),
        };
        let started = self.launch(ctl, g, job_id.clone(), placed.as_ref()).await;
        if started.is_err()
            && placed.is_some()
            && let Some(jobs) = &self.jobs
        {
            jobs.release(&job_id).await;
        }
        started.map(|r| Start::Started(Box::new(r)))
    }

    async fn launch(
        &self,
        ctl: &mut Ctl,
        g: &Group,
        job_id: String,
        placed: Option<&Placed>,
    ) -> Result<Replica, String> {
        let t = &g.target;
        let spec = &t.spec;
        let pool_name = placed.map_or(spec.pool.as_str(), |p| p.pool.as_str());
        let (pool_gpus, procurement) = self.pool_info(pool_name).await;
        let mut gpus = Vec::new();
        if let Some(p) = placed {
            gpus = p.gpus.iter().map(|s| s.index).collect();
        } else if spec.resources.gpus > 0 {
            gpus = (0..pool_gpus)
                .filter(|i| !ctl.gpus_in_use.contains(i))
                .take(spec.resources.gpus as usize)
                .collect();
            if gpus.len() < spec.resources.gpus as usize {
                return Err(format!(
                    "a replica needs {} GPUs but pool `{}` has {pool_gpus}, {} of them held by other replicas",
                    spec.resources.gpus,
                    spec.pool,
                    ctl.gpus_in_use.len()
                ));
            }
        }
        let port = free_port()?;
        let command: Vec<String> = spec
            .command
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut a = AttemptSpec::new(job_id.clone(), 1, command);
        a.env = spec.env.clone();
        a.env.insert(spec.port_env.clone(), port.to_string());
        a.gpus = match placed {
            Some(p) => p.gpus.clone(),
            None => gpus.iter().map(|&i| GpuSlot::whole(i)).collect(),
        };
        a.stop_grace = STOP_GRACE;
        a.pool = pool_name.to_string();
        a.procurement = procurement;
        let team = self.server.team_of(&t.deployment).unwrap_or_default();
        let tags: BTreeMap<String, String> = [
            ("team", team),
            ("deployment", t.deployment.clone()),
            ("version", t.version.clone()),
            ("model", t.model.clone()),
            ("replica", job_id.clone()),
            ("cpus", spec.resources.cpus.to_string()),
            ("memoryGib", spec.resources.memory_gib.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        a.tags = tags.clone();
        let exec = Arc::clone(&self.exec);
        let id = a.id();
        let started = match tokio::task::spawn_blocking(move || exec.start(a)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // A command that could not start has nothing to meter: forget it.
                if let Ok(dir) = self.exec.attempt_dir(&id)
                    && let Some(parent) = dir.parent()
                {
                    let _ = std::fs::remove_dir_all(parent);
                }
                return Err(format!("replica {job_id}: {e}"));
            }
            Err(e) => return Err(format!("replica {job_id}: start panicked: {e}")),
        };
        if placed.is_none() {
            for &i in &gpus {
                ctl.gpus_in_use.insert(i);
            }
        } else if let Some(p) = placed {
            tracing::info!(replica = %id.job_id, queue = %p.queue, pool = %p.pool, node = %p.node, gpus = ?gpus, "replicas: admitted by the scheduler");
        }
        let meter = plinth_exec::UsageRecord {
            job_id: id.job_id.clone(),
            attempt: id.attempt,
            pool: pool_name.to_string(),
            procurement,
            gpu_seconds: 0.0,
            cpu_seconds: 0.0,
            wall_seconds: 0.0,
            started_at: started.started_at,
            ended_at: started.started_at,
            end_reason: plinth_exec::EndReason::Completed,
            tags,
        };
        let info = AdoptInfo {
            deployment: t.deployment.clone(),
            version: t.version.clone(),
            digest: g.digest.clone(),
            port,
            gpus: gpus.clone(),
            meter: meter.clone(),
            queue: placed.map(|p| p.queue.clone()),
        };
        let written = self
            .exec
            .attempt_dir(&id)
            .map_err(|e| e.to_string())
            .and_then(|d| write_json(&d, ADOPT_FILE, &info).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::warn!(replica = %id.job_id, error = %e, "replicas: cannot record the replica for a later adoption; a restart will stop it");
        }
        Ok(Replica {
            endpoint: Endpoint::new(job_id, format!("http://127.0.0.1:{port}")),
            id: started.id,
            port,
            pid: started.pid,
            started: Instant::now(),
            started_at: now_str(),
            state: State::Starting,
            meter: Some(meter),
            metered_at: Instant::now(),
            gpus,
            last_check: Instant::now(),
            health_failures: 0,
            held: placed.is_some(),
        })
    }

    fn publish_metrics(&self, ctl: &mut Ctl) {
        let family = &self.gateway.metrics().replicas;
        let mut now = BTreeSet::new();
        for ((d, v), g) in &ctl.groups {
            for s in STATES {
                let n = g.replicas.iter().filter(|r| r.state.name() == s).count();
                family
                    .get_or_create(&ReplicaLabels {
                        deployment: d.clone(),
                        version: v.clone(),
                        state: s.to_string(),
                    })
                    .set(n as i64);
            }
            now.insert((d.clone(), v.clone()));
        }
        for (d, v) in ctl.gauges.difference(&now) {
            for s in STATES {
                family.remove(&ReplicaLabels {
                    deployment: d.clone(),
                    version: v.clone(),
                    state: s.to_string(),
                });
            }
        }
        ctl.gauges = now;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A replica's whole life as the executor meters it: 100 s from 10:00 on 2026-11-02 with 2
    /// GPUs (200 GPU-seconds) and 50 CPU-seconds, stopped by a cancel.
    fn life(tags: &[(&str, &str)]) -> plinth_exec::UsageRecord {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        plinth_exec::UsageRecord {
            job_id: "r-chat-v1-abcd1234".into(),
            attempt: 1,
            pool: "local".into(),
            procurement: plinth_exec::Procurement::Spot,
            gpu_seconds: 200.0,
            cpu_seconds: 50.0,
            wall_seconds: 100.0,
            started_at: t0,
            ended_at: t0 + chrono::Duration::seconds(100),
            end_reason: plinth_exec::EndReason::Cancel,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_replica_lifetime_becomes_a_priced_serving_row() {
        let u = life(&[
            ("team", "research"),
            ("deployment", "chat"),
            ("version", "v1"),
            ("model", "gpt-x"),
            ("cpus", "2"),
            ("memoryGib", "8"),
        ]);
        let row = replica_row(&u, None);
        row.check().unwrap();
        assert_eq!(row.source, "replica");
        assert_eq!(row.id, "replica/r-chat-v1-abcd1234");
        assert_eq!(row.workload, "serving");
        assert_eq!(row.workload_name, "chat");
        assert_eq!(row.procurement, "spot");
        // 200 GPU-seconds over 100 s: 2 GPUs held; 50 CPU-seconds: 0.5 cores used.
        assert_eq!(row.request_gpus, 2.0);
        assert_eq!(row.usage_cpus, 0.5);
        assert_eq!(row.request_cpus, 2.0);
        assert_eq!(row.request_memory_gib, 8.0);
        assert_eq!(row.start, "2026-11-02T10:00:00.000000Z");
        assert_eq!(row.end, "2026-11-02T10:01:40.000000Z");
        assert_eq!(row.model_version.as_deref(), Some("v1"));
        assert_eq!(row.end_reason.as_deref(), Some("cancel"));
        let rec = crate::cost::to_record(&row).unwrap();
        assert!(
            matches!(rec.workload, plinth_cost::Workload::Serving { ref deployment } if deployment == "chat")
        );
    }

    #[test]
    fn running_stretches_and_the_rest_add_up_to_the_whole_life() {
        let whole = life(&[("deployment", "chat")]);
        let t0 = whole.started_at;
        // A first stretch of 60 s with 20 CPU-seconds was written while it ran.
        let first = plinth_exec::UsageRecord {
            ended_at: t0 + chrono::Duration::seconds(60),
            wall_seconds: 60.0,
            gpu_seconds: 120.0,
            cpu_seconds: 20.0,
            ..whole.clone()
        };
        let row = replica_row(&first, Some(1));
        assert_eq!(row.id, "replica/r-chat-v1-abcd1234/1");
        assert_eq!(row.end_reason, None);
        assert_eq!(row.end, "2026-11-02T10:01:00.000000Z");
        assert_eq!((row.request_gpus, row.usage_cpus), (2.0, 20.0 / 60.0));
        // The rest: the last 40 s, 2 GPUs still, the other 30 CPU-seconds.
        let rest = rest_of(&whole, first.ended_at, 20.0);
        assert_eq!(rest.started_at, first.ended_at);
        assert_eq!(
            (rest.wall_seconds, rest.gpu_seconds, rest.cpu_seconds),
            (40.0, 80.0, 30.0)
        );
        let last = replica_row(&rest, None);
        assert_eq!(last.id, "replica/r-chat-v1-abcd1234");
        assert_eq!(last.start, "2026-11-02T10:01:00.000000Z");
        assert_eq!(last.end_reason.as_deref(), Some("cancel"));
        assert_eq!((last.request_gpus, last.usage_cpus), (2.0, 0.75));
        // A cursor past the end (clock skew) leaves an empty rest, never a negative one.
        let none = rest_of(&whole, t0 + chrono::Duration::seconds(500), 60.0);
        assert_eq!((none.wall_seconds, none.cpu_seconds), (0.0, 0.0));
    }

    #[test]
    fn the_usage_cursor_survives_a_round_trip_and_a_missing_file_is_a_fresh_start() {
        let dir = std::env::temp_dir().join(format!(
            "plinth-meter-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_cursor(&dir), MeterCursor::default());
        let c = MeterCursor {
            until: Some(Utc::now()),
            cpu_seconds: 1.5,
            parts: 2,
            pending: Vec::new(),
        };
        write_cursor(&dir, &c).unwrap();
        assert_eq!(read_cursor(&dir), c);
        assert!(!dir.join("meter.json.tmp").exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn replica_ids_fit_the_executor() {
        let id = new_id("chat", "v1");
        assert!(id.starts_with("r-chat-v1-") && id.len() == "r-chat-v1-".len() + 8);
        let long = "d".repeat(128);
        let id = new_id(&long, "v1");
        assert!(id.len() <= 128, "{id}");
        assert!(AttemptId::new(id, 1).job_id.starts_with("r-"));
    }

    #[tokio::test]
    async fn probe_reads_the_status_line() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        assert!(probe(port, "/health").await);
        assert!(!probe(port, "/health").await);
        let closed = free_port().unwrap();
        assert!(!probe(closed, "/health").await);
    }
}
