//! Capacity held through the scheduler by something other than a Job: the gateway's local
//! replicas. A replica that needs a scheduled pool is a workload of class `inference` in a
//! queue, like a job: it waits for quota and capacity (with the scheduler's reason), counts
//! in its queue's usage, borrows and is reclaimed by the cohort's rules, may preempt
//! lower-priority jobs, and gets its GPUs from the scheduler's placement, so a job and a
//! replica never share a GPU. A hold the scheduler takes back (preemption, a node lost) is
//! revoked: its holder stops and releases it.

use plinth_exec::GpuSlot;
use plinth_sched::{JobId, WorkloadClass};

use super::{Ctl, Jobs, now_ms};

/// What a holder asks for (one pod).
#[derive(Debug, Clone, PartialEq)]
pub struct HoldRequest {
    /// Unique name of the holder (a replica's id).
    pub holder: String,
    /// The holder's team: without `queue`, its queue is the first of the team's queues (by
    /// name) that admits it.
    pub team: String,
    pub queue: Option<String>,
    /// The pool named by the holder; without `queue`, a pool the scheduler does not run makes
    /// the hold [`HoldState::Unscheduled`].
    pub pool: String,
    pub gpus: u32,
    pub cpus: f64,
    pub memory_gib: f64,
}

/// Where a hold stands.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldState {
    /// No queue was named and the pool is not one the scheduler runs: the holder runs outside
    /// its books, as before there were holds.
    Unscheduled,
    /// Waiting for admission in `queue`, for `reason`.
    Waiting { queue: String, reason: String },
    /// Admitted: the holder may run on these GPUs of `node` in `pool`.
    Held {
        queue: String,
        pool: String,
        node: String,
        gpus: Vec<GpuSlot>,
    },
    /// The scheduler took the capacity back; the holder must stop, then release the hold.
    Revoked { reason: String },
    /// No queue can ever admit it.
    Rejected { reason: String },
}

/// One hold, in the controller.
#[derive(Debug)]
pub(super) struct Hold {
    id: JobId,
    queue: String,
    state: HoldState,
    /// A revocation was reported to the holder.
    reported: bool,
}

impl Ctl {
    /// The hold behind a scheduler id, if the id is a hold's.
    pub(super) fn hold_mut(&mut self, id: JobId) -> Option<&mut Hold> {
        let name = self.hold_ids.get(&id)?;
        self.holds.get_mut(name)
    }
}

impl Hold {
    pub(super) fn admitted(&mut self, pool: &str, placement: &[plinth_sched::PodPlacement]) {
        let p = placement.first();
        self.state = HoldState::Held {
            queue: self.queue.clone(),
            pool: pool.to_string(),
            node: p.map(|p| p.node.clone()).unwrap_or_default(),
            gpus: p.map(|p| super::gpu_slots(&p.gpus)).unwrap_or_default(),
        };
    }

    pub(super) fn revoke(&mut self, reason: String) {
        self.state = HoldState::Revoked { reason };
    }
}

impl Jobs {
    /// Asks for a hold (the first call) and tells where it stands (every call). A request that
    /// differs from the first one for the same holder is answered with the first one's state.
    pub async fn hold(&self, req: &HoldRequest) -> HoldState {
        self.wait_recovered().await;
        let mut ctl = self.ctl.lock().await;
        if let Some(h) = ctl.holds.get(&req.holder) {
            let id = h.id;
            let state = h.state.clone();
            return match state {
                HoldState::Waiting { queue, reason } => {
                    let live = ctl.sched.why(id).ok().flatten().map(|w| w.message);
                    HoldState::Waiting {
                        queue,
                        reason: live.unwrap_or(reason),
                    }
                }
                other => other,
            };
        }
        let candidates: Vec<String> = match &req.queue {
            Some(q) => vec![q.clone()],
            None => {
                if !ctl.procurement.contains_key(&req.pool) {
                    return HoldState::Unscheduled;
                }
                let has_quota = |q: &str| {
                    ctl.sched
                        .queue_usage(q)
                        .is_ok_and(|us| us.iter().any(|u| u.pool == req.pool))
                };
                let mut qs: Vec<String> = ctl
                    .queue_teams
                    .iter()
                    .filter(|(q, team)| **team == req.team && has_quota(q))
                    .map(|(q, _)| q.clone())
                    .collect();
                qs.sort();
                if qs.is_empty() {
                    return HoldState::Rejected {
                        reason: format!(
                            "pool `{}` is scheduled and team `{}` has no queue with a quota on it: apply one, or name a queue in `replicas.queue`",
                            req.pool, req.team
                        ),
                    };
                }
                qs
            }
        };
        let mut refusals = Vec::new();
        for q in candidates {
            if !ctl.queues.contains_key(&q) {
                refusals.push(if ctl.queue_teams.contains_key(&q) {
                    format!("queue `{q}` has no quota on a pool this server runs")
                } else {
                    format!("queue `{q}` does not exist")
                });
                continue;
            }
            if let Some(team) = ctl.queue_teams.get(&q)
                && *team != req.team
            {
                refusals.push(format!(
                    "queue `{q}` belongs to team `{team}`, not `{}`",
                    req.team
                ));
                continue;
            }
            let mut spec = plinth_sched::JobSpec::new(&q, WorkloadClass::Inference, 1, 0.0);
            spec.gpus_per_pod = f64::from(req.gpus);
            spec.cpus_per_pod = req.cpus;
            spec.memory_mib_per_pod = (req.memory_gib * 1024.0).ceil() as u64;
            match ctl.sched.submit(spec, now_ms()) {
                Ok(id) => {
                    let state = HoldState::Waiting {
                        queue: q.clone(),
                        reason: "waiting for the scheduler's next pass".into(),
                    };
                    ctl.hold_ids.insert(id, req.holder.clone());
                    ctl.holds.insert(
                        req.holder.clone(),
                        Hold {
                            id,
                            queue: q,
                            state: state.clone(),
                            reported: false,
                        },
                    );
                    drop(ctl);
                    self.wake.notify_one();
                    return state;
                }
                Err(r) => refusals.push(format!("queue `{q}`: {}", r.reason)),
            }
        }
        HoldState::Rejected {
            reason: refusals.join("; "),
        }
    }

    /// Gives a hold's capacity back (its holder stopped, or no longer wants it). Unknown
    /// holders are ignored.
    pub async fn release(&self, holder: &str) {
        let mut ctl = self.ctl.lock().await;
        if let Some(h) = ctl.holds.remove(holder) {
            ctl.hold_ids.remove(&h.id);
            let _ = ctl.sched.cancel(h.id, now_ms());
            drop(ctl);
            self.wake.notify_one();
        }
    }

    /// Holders whose hold was revoked since they last asked (each is reported once), with
    /// the reason.
    pub async fn revoked(&self) -> Vec<(String, String)> {
        let mut ctl = self.ctl.lock().await;
        let mut out = Vec::new();
        for (name, h) in ctl.holds.iter_mut() {
            if let HoldState::Revoked { reason } = &h.state
                && !h.reported
            {
                h.reported = true;
                out.push((name.clone(), reason.clone()));
            }
        }
        out
    }
}
