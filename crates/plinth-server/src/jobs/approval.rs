//! The cost guards in the job controller (their logic is in `crate::cost`): jobs held as
//! `pending_approval` at submit and approved later, non-production work refused under a
//! blocking budget, and the usage records of ended attempts stored again from the executor's
//! usage file after a restart.

use std::collections::HashMap;

use plinth_core::CoreError;
use plinth_types::Identity;
use plinth_types::job::{Job, JobSpec, JobState};

use super::runner::Runner;
use super::{Ctl, Jobs, Tracked, convert, now_ms, view};
use crate::cost::Admission;

impl Jobs {
    /// What the cost guards say about jobs about to be submitted (with the figures of the
    /// guards' last refresh): name → why each held job waits for approval; or the index and
    /// error of the first job a budget refuses.
    pub(super) fn cost_holds(
        &self,
        checked: &[(String, JobSpec)],
    ) -> Result<HashMap<String, String>, (usize, CoreError)> {
        let mut held = HashMap::new();
        for (i, (name, spec)) in checked.iter().enumerate() {
            match self.guard.admission(spec) {
                Ok(Admission::Queue) => {}
                Ok(Admission::NeedsApproval(why)) => {
                    held.insert(name.clone(), why);
                }
                Err(why) => return Err((i, CoreError::invalid(format!("spec.tags: {why}")))),
            }
        }
        Ok(held)
    }

    /// Approves a job waiting as `pending_approval`: a maintainer of its team (or an admin)
    /// other than its submitter; the job then queues with its original submit time. Audited as
    /// `job.approve`.
    pub async fn approve(&self, who: &Identity, name: &str) -> Result<Job, CoreError> {
        let job = self.get(who, name).await?;
        crate::cost::may_approve(who, &job.spec.team, &job.status.submitted_by)
            .map_err(CoreError::PermissionDenied)?;
        let mut ctl = self.ctl.lock().await;
        let waiting = ctl
            .jobs
            .get(name)
            .is_some_and(|t| t.record.status.state == JobState::PendingApproval);
        if !waiting {
            return Err(CoreError::Conflict(format!(
                "Job {name} is not waiting for approval (it is {})",
                job.status.state.as_str()
            )));
        }
        let Some(mut t) = ctl.jobs.remove(name) else {
            return Err(CoreError::NotFound(format!("Job {name} not found")));
        };
        let submitted = u64::try_from(t.record.status.submitted_ms).unwrap_or(0);
        let id = match ctl
            .sched
            .submit(convert::sched_job(&t.record.spec), submitted)
        {
            Ok(id) => id,
            Err(r) => {
                ctl.jobs.insert(name.to_string(), t);
                return Err(CoreError::invalid(format!("spec: rejected: {}", r.reason)));
            }
        };
        let before = t.record.status.clone();
        t.record.status.state = JobState::Pending;
        t.record.status.wait_reason = Some("not yet considered by the scheduler".into());
        t.record.status.message = Some(format!("approved by {}", who.actor()));
        let stored = match self.stage(name, &mut t, &who.actor(), Some("job.approve")) {
            Ok(()) => self.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            let _ = ctl.sched.cancel(id, now_ms());
            t.record.status = before;
            if let Ok(Some(o)) = self
                .platform
                .store()
                .get_object(plinth_config::kinds::JOB_KIND, name)
                .await
            {
                t.generation = o.generation;
            }
            ctl.jobs.insert(name.to_string(), t);
            return Err(e);
        }
        t.sched = Some(id);
        ctl.by_id.insert(id, name.to_string());
        let out = view(name, &t);
        ctl.jobs.insert(name.to_string(), t);
        drop(ctl);
        self.wake.notify_one();
        Ok(out)
    }

    /// Stores the usage of every attempt the executor has recorded (counted once), so usage
    /// whose write was cut short by a crash is not lost.
    pub(super) async fn backfill_usage(&self) {
        if let Runner::Local(e) = &self.exec {
            match e.usage_records() {
                Ok(records) => crate::cost::backfill(self.platform.store(), records).await,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the executor's usage records")
                }
            }
        }
    }
}

/// Holds a just-submitted job for approval: out of the scheduler, waiting with the reason.
pub(super) fn hold(ctl: &mut Ctl, t: &mut Tracked, reason: Option<&String>, ms: u64) {
    let Some(reason) = reason else { return };
    if let Some(id) = t.sched.take() {
        let _ = ctl.sched.cancel(id, ms);
    }
    t.record.status.state = JobState::PendingApproval;
    t.record.status.wait_reason = Some(reason.clone());
}
