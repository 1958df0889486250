//! `plinth apply` of `kind: Job` documents: the other documents are applied first (one atomic
//! batch, so a Queue in the same files exists), then each job is submitted as by
//! `POST /api/v1/jobs`. A job whose name exists with the same spec is `unchanged`; with a
//! different spec it is a conflict (jobs cannot be changed once submitted).

use plinth_core::CoreError;
use plinth_types::api::{ApplyAction, ApplyResponse, ApplyResult, SourcedDocument};
use plinth_types::job::{JobSpec, SubmitJobRequest};
use plinth_types::{API_VERSION, Identity};

use crate::AppState;

fn where_(d: &SourcedDocument) -> String {
    format!(
        "{}: document {}",
        d.file.as_deref().unwrap_or("request"),
        d.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into())
    )
}

/// Parses a `kind: Job` document into a submit request, naming the document and field.
fn parse(d: &SourcedDocument) -> Result<SubmitJobRequest, String> {
    let at = where_(d);
    let map = d
        .document
        .as_object()
        .ok_or_else(|| format!("{at}: a document must be a mapping"))?;
    for key in map.keys() {
        if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
            return Err(format!(
                "{at}: {key}: unknown field; a document has apiVersion, kind, metadata and spec"
            ));
        }
    }
    if map.get("apiVersion").and_then(|v| v.as_str()) != Some(API_VERSION) {
        return Err(format!("{at}: apiVersion: expected {API_VERSION:?}"));
    }
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("{at}: metadata.name: missing"))?
        .to_string();
    let spec = map
        .get("spec")
        .cloned()
        .ok_or_else(|| format!("{at} (Job/{name}): spec: missing"))?;
    let spec: JobSpec =
        serde_json::from_value(spec).map_err(|e| format!("{at} (Job/{name}): spec: {e}"))?;
    Ok(SubmitJobRequest {
        name: Some(name),
        spec,
    })
}

pub async fn apply_with_jobs(
    s: &AppState,
    who: &Identity,
    others: Vec<SourcedDocument>,
    jobs: Vec<SourcedDocument>,
    dry_run: bool,
) -> Result<ApplyResponse, CoreError> {
    let controller = s.jobs.as_ref().ok_or_else(|| {
        CoreError::invalid(
            "Job documents need the job controller, which does not run in this server",
        )
    })?;
    // Every job document is checked before anything is stored.
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    for d in &jobs {
        match parse(d) {
            Ok(r) => {
                let name = r.name.clone().unwrap_or_default();
                if let Err(e) = controller.precheck(who, &name, &r.spec) {
                    if matches!(e, CoreError::PermissionDenied(_)) {
                        return Err(e);
                    }
                    problems.push(format!("{} (Job/{name}): {e}", where_(d)));
                } else {
                    requests.push(r);
                }
            }
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        return Err(CoreError::Invalid {
            message: format!(
                "{} invalid Job document(s); nothing applied",
                problems.len()
            ),
            details: problems,
        });
    }
    let mut results = if others.is_empty() {
        Vec::new()
    } else {
        s.platform.apply(who, others, dry_run).await?.results
    };
    for r in requests {
        let name = r.name.clone().unwrap_or_default();
        let existing = match controller.get(who, &name).await {
            Ok(j) => Some(j),
            Err(CoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let result = match existing {
            Some(j) if j.spec == r.spec => ApplyResult {
                kind: "Job".into(),
                name,
                action: ApplyAction::Unchanged,
                generation: j.generation,
                changes: Vec::new(),
            },
            Some(_) => {
                return Err(CoreError::Conflict(format!(
                    "Job/{name} exists with a different spec; a job cannot be changed once submitted (cancel it and submit under a new name)"
                )));
            }
            None => {
                let j = controller.submit_or_check(who, r, dry_run).await?;
                ApplyResult {
                    kind: "Job".into(),
                    name: j.name,
                    action: ApplyAction::Created,
                    generation: j.generation.max(1),
                    changes: Vec::new(),
                }
            }
        };
        results.push(result);
    }
    Ok(ApplyResponse { dry_run, results })
}
