//! What runs admitted attempts: the local executor (real processes under the supervisor), or,
//! for benchmarks only, the simulated executor.
//!
//! The simulated executor starts no process: an attempt holds the resources the scheduler
//! admitted it with for the job's `simulatedRuntime` and then ends as `completed` (exit code 0);
//! a stop (cancel, preemption, interruption) ends it at once with that reason. It keeps its
//! attempts in memory only, so after a restart their jobs' attempts are lost and retried like
//! any lost attempt. It exists so the whole server path (HTTP, auth, validation, the stored Job
//! written on each change, the scheduler, the controller loop) can be measured with workloads
//! of thousands of short jobs, as Kueue's own performance test marks a workload finished after
//! its runtime without running pods.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use plinth_exec::{
    AttemptId, AttemptSpec, AttemptStatus, EndReason, ExecError, Executor, ExitKind, LogChunk,
    LogInfo, LogStream, Outcome, Recovered, StopReason, UsageRecord,
};

/// The executor the controller drives.
pub enum Runner {
    Local(Executor),
    Simulated(SimExec),
}

impl Runner {
    pub fn describe(&self) -> String {
        match self {
            Runner::Local(e) => e.root().display().to_string(),
            Runner::Simulated(_) => "simulated".into(),
        }
    }

    pub fn is_simulated(&self) -> bool {
        matches!(self, Runner::Simulated(_))
    }

    /// Starts a pod of an attempt; `runtime` is what the simulated executor holds it for (it
    /// runs rank 0 only: the scheduler holds the whole gang's resources meanwhile).
    pub fn start(&self, a: AttemptSpec, runtime: Duration) -> Result<(), ExecError> {
        match self {
            Runner::Local(e) => e.start(a).map(|_| ()),
            Runner::Simulated(_) if a.pod.as_ref().is_some_and(|p| p.rank > 0) => Ok(()),
            Runner::Simulated(s) => s.start(a, runtime),
        }
    }

    /// Stops every pod of attempt `n` of `job` (`world` pods); the first error, if any.
    pub fn stop_pods(
        &self,
        job: &str,
        n: u32,
        world: u32,
        reason: StopReason,
        grace: Duration,
    ) -> Result<(), ExecError> {
        let mut first = Ok(());
        for rank in 0..world {
            let r = self.stop(&pod_id(job, n, rank), reason, grace);
            // A pod that has ended already (or, simulated, was never started) is no error.
            if let Err(e) = r
                && !(rank > 0 && matches!(e, ExecError::NotFound { .. }))
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    pub fn stop(
        &self,
        id: &AttemptId,
        reason: StopReason,
        grace: Duration,
    ) -> Result<(), ExecError> {
        match self {
            Runner::Local(e) => e.stop(id, reason, grace),
            Runner::Simulated(s) => s.stop(id, reason),
        }
    }

    /// The outcomes of the attempts among `running` (job, attempt, pods) that have ended. An
    /// attempt of several pods ends when all of them have; once one of them has ended other
    /// than `completed`, the others are stopped (reason `cancel`, after `grace`).
    pub fn ended(&self, running: Vec<(String, u32, u32)>, grace: Duration) -> Vec<Outcome> {
        let Runner::Local(e) = self else {
            return match self {
                Runner::Simulated(s) => s.drain_ended(),
                Runner::Local(_) => Vec::new(),
            };
        };
        let mut out = Vec::new();
        'jobs: for (name, n, world) in running {
            let mut done = Vec::with_capacity(world as usize);
            let mut still = Vec::new();
            for rank in 0..world {
                let id = pod_id(&name, n, rank);
                match e.status(&id) {
                    Ok(AttemptStatus::Finished(o)) => done.push(o),
                    Ok(AttemptStatus::Running { .. }) => still.push(id),
                    Err(err) => {
                        tracing::warn!(job = %name, pod = rank, error = %err, "cannot read attempt status");
                        continue 'jobs;
                    }
                }
            }
            if still.is_empty() {
                out.push(gang_outcome(&name, n, done));
            } else if done.iter().any(|o| o.end_reason != EndReason::Completed) {
                for id in still {
                    if let Err(err) = e.stop(&id, StopReason::Cancel, grace) {
                        tracing::warn!(job = %name, error = %err, "cannot stop the rest of a failed gang");
                    }
                }
            }
        }
        out
    }

    /// When the next simulated attempt ends (the controller wakes up then).
    pub fn next_end(&self) -> Option<Instant> {
        match self {
            Runner::Local(_) => None,
            Runner::Simulated(s) => s.next_end(),
        }
    }

    pub fn read_log(
        &self,
        id: &AttemptId,
        stream: LogStream,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, ExecError> {
        match self {
            Runner::Local(e) => e.read_log(id, stream, offset, max),
            Runner::Simulated(_) => Ok(LogChunk {
                data: Vec::new(),
                next_offset: offset,
                complete: true,
            }),
        }
    }

    pub fn recover(&self) -> Result<Vec<Recovered>, ExecError> {
        match self {
            Runner::Local(e) => e.recover(),
            Runner::Simulated(_) => Ok(Vec::new()),
        }
    }

    pub fn reap(&self) {
        if let Runner::Local(e) = self {
            e.reap();
        }
    }
}

/// The executor's id of pod `rank` of attempt `n` of `job`: rank 0 is the job itself (as for a
/// job of one pod), rank r > 0 is `<job>.<r>` (job names have no dots, so no job has it).
pub fn pod_id(job: &str, n: u32, rank: u32) -> AttemptId {
    if rank == 0 {
        AttemptId::new(job, n)
    } else {
        AttemptId::new(format!("{job}.{rank}"), n)
    }
}

/// One outcome for an attempt from those of its pods (by rank): all completed, rank 0's; else
/// that of the pod which ended first other than completed (the cause; the others were
/// stopped because of it). Usage adds up GPU and CPU seconds over the pods.
fn gang_outcome(job: &str, n: u32, mut pods: Vec<Outcome>) -> Outcome {
    let cause = pods
        .iter()
        .enumerate()
        .filter(|(_, o)| o.end_reason != EndReason::Completed)
        .min_by_key(|(_, o)| o.usage.ended_at)
        .map_or(0, |(i, _)| i);
    if pods.len() == 1 {
        return pods.swap_remove(0);
    }
    let gpu_seconds = pods.iter().map(|o| o.usage.gpu_seconds).sum();
    let cpu_seconds = pods.iter().map(|o| o.usage.cpu_seconds).sum();
    let wall_seconds = pods
        .iter()
        .map(|o| o.usage.wall_seconds)
        .fold(0.0, f64::max);
    let started_at = pods.iter().map(|o| o.usage.started_at).min();
    let ended_at = pods.iter().map(|o| o.usage.ended_at).max();
    let mut o = pods.swap_remove(cause);
    o.id = AttemptId::new(job, n);
    o.usage.job_id = job.to_string();
    o.usage.gpu_seconds = gpu_seconds;
    o.usage.cpu_seconds = cpu_seconds;
    o.usage.wall_seconds = wall_seconds;
    o.usage.started_at = started_at.unwrap_or(o.usage.started_at);
    o.usage.ended_at = ended_at.unwrap_or(o.usage.ended_at);
    o
}

struct SimAttempt {
    spec: AttemptSpec,
    started_at: DateTime<Utc>,
    ends: Instant,
}

#[derive(Default)]
struct SimState {
    running: HashMap<AttemptId, SimAttempt>,
    /// End instants; an entry whose attempt was stopped earlier is skipped.
    queue: BinaryHeap<Reverse<(Instant, AttemptId)>>,
    ended: Vec<Outcome>,
}

/// The benchmark-only executor (see the module documentation).
#[derive(Default)]
pub struct SimExec {
    state: Mutex<SimState>,
}

fn outcome(id: AttemptId, a: &SimAttempt, exit: ExitKind, reason: EndReason) -> Outcome {
    let ended_at = Utc::now();
    let wall = (ended_at - a.started_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(0) as f64
        / 1e6;
    let gpus: f64 = a.spec.gpus.iter().map(|g| g.fraction.unwrap_or(1.0)).sum();
    Outcome {
        id: id.clone(),
        exit,
        end_reason: reason,
        usage: UsageRecord {
            job_id: id.job_id.clone(),
            attempt: id.attempt,
            pool: a.spec.pool.clone(),
            procurement: a.spec.procurement,
            gpu_seconds: wall * gpus,
            cpu_seconds: 0.0,
            wall_seconds: wall,
            started_at: a.started_at,
            ended_at,
            end_reason: reason,
            tags: a.spec.tags.clone(),
        },
        stdout: LogInfo::default(),
        stderr: LogInfo::default(),
    }
}

impl SimExec {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves consistent data (every change is one insert or
        // remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start(&self, spec: AttemptSpec, runtime: Duration) -> Result<(), ExecError> {
        let id = spec.id();
        let mut s = self.lock();
        if s.running.contains_key(&id) {
            return Err(ExecError::AlreadyExists { id });
        }
        let ends = Instant::now() + runtime;
        s.queue.push(Reverse((ends, id.clone())));
        s.running.insert(
            id,
            SimAttempt {
                spec,
                started_at: Utc::now(),
                ends,
            },
        );
        Ok(())
    }

    pub fn stop(&self, id: &AttemptId, reason: StopReason) -> Result<(), ExecError> {
        let mut s = self.lock();
        let a = s
            .running
            .remove(id)
            .ok_or_else(|| ExecError::NotFound { id: id.clone() })?;
        let o = outcome(id.clone(), &a, ExitKind::Signal(15), reason.into());
        s.ended.push(o);
        Ok(())
    }

    /// Attempts whose runtime is over (as completed) and those stopped since the last call.
    pub fn drain_ended(&self) -> Vec<Outcome> {
        let now = Instant::now();
        let mut s = self.lock();
        while let Some(Reverse((at, _))) = s.queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, id))) = s.queue.pop() else {
                break;
            };
            let done = s.running.get(&id).is_some_and(|a| a.ends == at);
            if done && let Some(a) = s.running.remove(&id) {
                let o = outcome(id, &a, ExitKind::Code(0), EndReason::Completed);
                s.ended.push(o);
            }
        }
        std::mem::take(&mut s.ended)
    }

    pub fn next_end(&self) -> Option<Instant> {
        let s = self.lock();
        if !s.ended.is_empty() {
            return Some(Instant::now());
        }
        s.queue.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use plinth_exec::GpuSlot;

    fn spec(job: &str, n: u32) -> AttemptSpec {
        let mut a = AttemptSpec::new(job, n, vec!["true".into()]);
        a.gpus = vec![GpuSlot::whole(0), GpuSlot::whole(1)];
        a.pool = "gpu".into();
        a
    }

    #[test]
    fn an_attempt_completes_after_its_runtime_and_a_stop_ends_it_with_the_reason() {
        let s = SimExec::default();
        s.start(spec("a", 1), Duration::from_millis(30)).unwrap();
        s.start(spec("b", 1), Duration::from_secs(3600)).unwrap();
        assert!(matches!(
            s.start(spec("a", 1), Duration::ZERO),
            Err(ExecError::AlreadyExists { .. })
        ));
        assert!(s.drain_ended().is_empty(), "nothing has ended yet");
        let next = s.next_end().unwrap();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let done = s.drain_ended();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].id, AttemptId::new("a", 1));
        assert_eq!(done[0].end_reason, EndReason::Completed);
        assert_eq!(done[0].exit, ExitKind::Code(0));
        // Two whole GPUs held for the wall time.
        let u = &done[0].usage;
        assert!((u.gpu_seconds - 2.0 * u.wall_seconds).abs() < 1e-9, "{u:?}");
        assert!(u.wall_seconds >= 0.03, "{u:?}");

        s.stop(&AttemptId::new("b", 1), StopReason::Interrupted)
            .unwrap();
        let done = s.drain_ended();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].end_reason, EndReason::Interrupted);
        assert!(matches!(
            s.stop(&AttemptId::new("b", 1), StopReason::Cancel),
            Err(ExecError::NotFound { .. })
        ));
        assert!(
            s.next_end()
                .is_some_and(|t| t <= Instant::now() + Duration::from_secs(3600))
        );
        // The stale end entry of "b" does not end anything.
        assert!(s.drain_ended().is_empty());
    }
}
