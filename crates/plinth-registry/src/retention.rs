//! Artifact retention: the artifacts of model versions that were archived, or deprecated with a
//! sunset date, longer ago than the retention are deleted from the content-addressed store.
//!
//! A version is due when its stage is `Archived` and it has not changed for the retention (the
//! last change of an archived version is at the latest its archival), or when it carries the
//! `plinth.deprecated` tag (`sunset YYYY-MM-DD: reason`) and the retention has passed since the
//! sunset date (midnight UTC). Its artifacts are the files under its source: `runs:/<run>/<dir>`,
//! `models:/m-<id>` (an MLflow 3 logged model) or `mlflow-artifacts:/<path>`. Files that also
//! lie under the source of a version that is not due are kept; a blob is deleted only when no
//! artifact path of any run, model or version refers to its digest any more. The version itself
//! stays, with the tag `plinth.artifacts_deleted` saying when and why, and each collection is
//! one audit event (`model.artifacts_delete`).
//!
//! MLflow 3 logged models deleted (`DELETE logged-models/<id>`, which only marks them) longer
//! ago than the retention lose their artifacts the same way: files a registered version that
//! is not due still uses (a version registered from the model) are kept.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{NaiveDate, SecondsFormat, TimeZone, Utc};
use plinth_store::tracking::{KeyValue, ModelVersion, RegistrySearch};
use plinth_store::{Batch, Store};
use plinth_types::audit::NewAuditEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{MlflowError, RegistryState};

/// The tag a version gets once its artifacts are deleted: `<RFC 3339 time>: <why>`.
pub const TAG_ARTIFACTS_DELETED: &str = "plinth.artifacts_deleted";
const TAG_DEPRECATED: &str = "plinth.deprecated";
const ARTIFACT_SCHEME: &str = "mlflow-artifacts:/";

/// One version whose artifacts were (or, in a dry run, would be) deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectedVersion {
    pub model: String,
    pub version: String,
    /// `archived` or `deprecated`.
    pub reason: String,
    /// When the retention started: the archival (last change) or the sunset, RFC 3339.
    pub since: String,
    /// The artifact directory of the version (relative to the artifact root).
    pub artifact_path: String,
    /// Artifact files removed from the index.
    pub files: u64,
    /// Files kept because another version that is not due uses them.
    pub files_kept: u64,
}

/// One deleted logged model whose artifacts were (or, in a dry run, would be) deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectedLoggedModel {
    pub model_id: String,
    pub name: String,
    /// When it was deleted, RFC 3339.
    pub deleted: String,
    /// Its artifact directory (relative to the artifact root).
    pub artifact_path: String,
    pub files: u64,
    /// Files kept because a registered version that is not due uses them.
    pub files_kept: u64,
}

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    /// The retention applied, in seconds.
    pub retention_seconds: u64,
    pub versions: Vec<CollectedVersion>,
    /// Deleted MLflow 3 logged models whose artifacts went.
    #[serde(default)]
    pub logged_models: Vec<CollectedLoggedModel>,
    /// Content blobs deleted (referred to by nothing any more).
    pub blobs_deleted: u64,
    /// Bytes of the blobs deleted.
    pub bytes_freed: u64,
    /// Blobs kept because a run, a logged model or another version still refers to them.
    pub blobs_shared: u64,
}

/// Why and since when (ms) a version is due, or `None`.
fn due(mv: &ModelVersion, retention_ms: i64, now_ms: i64) -> Option<(&'static str, i64)> {
    if mv.tags.iter().any(|t| t.key == TAG_ARTIFACTS_DELETED) {
        return None;
    }
    if mv.current_stage == "Archived" && mv.last_updated_timestamp + retention_ms <= now_ms {
        return Some(("archived", mv.last_updated_timestamp));
    }
    let tag = mv.tags.iter().find(|t| t.key == TAG_DEPRECATED)?;
    let date = tag.value.strip_prefix("sunset ")?.get(..10)?;
    let sunset = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let sunset_ms = Utc
        .from_utc_datetime(&sunset.and_hms_opt(0, 0, 0)?)
        .timestamp_millis();
    (sunset_ms + retention_ms <= now_ms).then_some(("deprecated", sunset_ms))
}

/// The artifact directory (relative to the artifact root) a version's source names, if its
/// artifacts live in this server's store.
async fn artifact_dir(store: &Store, mv: &ModelVersion) -> Result<Option<String>, MlflowError> {
    let uri = if let Some(rest) = mv.source.strip_prefix("runs:/") {
        let (run_id, sub) = rest.split_once('/').unwrap_or((rest, ""));
        match store.get_run(run_id).await {
            Ok(run) if sub.is_empty() => run.info.artifact_uri,
            Ok(run) => format!("{}/{}", run.info.artifact_uri, sub.trim_matches('/')),
            Err(_) => return Ok(None),
        }
    } else if let Some(id) = mv
        .source
        .strip_prefix("models:/")
        .filter(|id| id.starts_with("m-") && !id.contains('/'))
        .or((!mv.model_id.is_empty()).then_some(mv.model_id.as_str()))
    {
        match store.get_logged_model(id, true).await {
            Ok(m) => m.info.artifact_uri,
            Err(_) => return Ok(None),
        }
    } else {
        mv.source.clone()
    };
    Ok(uri
        .strip_prefix(ARTIFACT_SCHEME)
        .map(|p| p.trim_matches('/').to_owned())
        .filter(|p| !p.is_empty()))
}

fn under(path: &str, dir: &str) -> bool {
    path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The files under `dir`: (files to delete, files kept because a protected directory holds
/// them, their paths); the digests of the files to delete join `digests`.
async fn split_files(
    store: &Store,
    dir: &str,
    protected: &[String],
    digests: &mut BTreeSet<String>,
) -> Result<(u64, u64, Vec<String>), MlflowError> {
    let (mut files, mut kept, mut paths) = (0, 0, Vec::new());
    for e in store.list_artifacts(dir).await? {
        if protected
            .iter()
            .any(|p| under(&e.path, p) || under(p, &e.path))
        {
            kept += 1;
        } else {
            files += 1;
            digests.insert(e.digest.clone());
            paths.push(e.path);
        }
    }
    Ok((files, kept, paths))
}

/// What one collection of a version's or a logged model's files records in the audit log.
struct Collected<'a> {
    kind: &'static str,
    name: String,
    reason: &'a str,
    since: String,
    dir: Option<&'a str>,
    files: u64,
    kept: u64,
}

async fn audit_collection(
    store: &Store,
    actor: &str,
    retention: Duration,
    c: Collected<'_>,
) -> Result<(), MlflowError> {
    let event = NewAuditEvent {
        ts: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        actor: actor.to_owned(),
        action: "model.artifacts_delete".into(),
        kind: c.kind.into(),
        name: c.name,
        team: None,
        before_digest: None,
        after_digest: None,
        detail: json!({
            "reason": c.reason,
            "since": c.since,
            "retentionSeconds": retention.as_secs(),
            "artifactPath": c.dir,
            "files": c.files,
            "filesKept": c.kept,
        }),
    };
    store
        .commit(Batch::new().event(event))
        .await
        .map_err(MlflowError::from)?;
    Ok(())
}

/// Deletes the artifacts of every version due under `retention` at `now_ms` (nothing is
/// changed with `dry_run`), and reports what went.
pub async fn collect(
    st: &RegistryState,
    actor: &str,
    retention: Duration,
    now_ms: i64,
    dry_run: bool,
) -> Result<GcReport, MlflowError> {
    let store = &st.store;
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .search_model_versions(&RegistrySearch {
                filter: Vec::new(),
                max_results: plinth_store::tracking::MAX_SEARCH_RESULTS,
                page_token: token,
            })
            .await?;
        all.extend(page.items);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let mut due_versions = Vec::new();
    let mut protected = Vec::new();
    for mv in all {
        let dir = artifact_dir(store, &mv).await?;
        match due(&mv, retention_ms, now_ms) {
            Some((reason, since)) => due_versions.push((mv, reason, since, dir)),
            None if mv.tags.iter().any(|t| t.key == TAG_ARTIFACTS_DELETED) => {}
            None => protected.extend(dir),
        }
    }
    due_versions.sort_by_key(|(mv, ..)| (mv.name.clone(), mv.version.parse::<i64>().unwrap_or(0)));
    let mut report = GcReport {
        dry_run,
        retention_seconds: retention.as_secs(),
        ..Default::default()
    };
    // Serialize with uploads: a blob is checked and deleted while no upload can record it.
    let _guard = st.gc_lock.write().await;
    let mut digests = BTreeSet::new();
    for (mv, reason, since, dir) in due_versions {
        let (files, kept, paths) = match &dir {
            Some(dir) => split_files(store, dir, &protected, &mut digests).await?,
            None => (0, 0, Vec::new()),
        };
        let note = format!(
            "{}: {reason} since {} and kept for {}s; {files} files deleted",
            rfc3339(now_ms),
            rfc3339(since),
            retention.as_secs()
        );
        if !dry_run {
            store.delete_artifact_paths(&paths).await?;
            store
                .set_model_version_tag(
                    &mv.name,
                    &mv.version,
                    &KeyValue::new(TAG_ARTIFACTS_DELETED, note.clone()),
                )
                .await?;
            let c = Collected {
                kind: "ModelVersion",
                name: format!("{}@{}", mv.name, mv.version),
                reason,
                since: rfc3339(since),
                dir: dir.as_deref(),
                files,
                kept,
            };
            audit_collection(store, actor, retention, c).await?;
        }
        report.versions.push(CollectedVersion {
            model: mv.name,
            version: mv.version,
            reason: reason.into(),
            since: rfc3339(since),
            artifact_path: dir.unwrap_or_default(),
            files,
            files_kept: kept,
        });
    }
    for lm in store
        .deleted_logged_models(now_ms.saturating_sub(retention_ms))
        .await?
    {
        let Some(dir) = lm
            .info
            .artifact_uri
            .strip_prefix(ARTIFACT_SCHEME)
            .map(|p| p.trim_matches('/').to_owned())
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        let (files, kept, paths) = split_files(store, &dir, &protected, &mut digests).await?;
        if files == 0 {
            // Collected before, or everything is still in use.
            continue;
        }
        let deleted = rfc3339(lm.info.last_updated_timestamp_ms);
        if !dry_run {
            store.delete_artifact_paths(&paths).await?;
            let c = Collected {
                kind: "LoggedModel",
                name: lm.info.model_id.clone(),
                reason: "deleted",
                since: deleted.clone(),
                dir: Some(&dir),
                files,
                kept,
            };
            audit_collection(store, actor, retention, c).await?;
        }
        report.logged_models.push(CollectedLoggedModel {
            model_id: lm.info.model_id,
            name: lm.info.name,
            deleted,
            artifact_path: dir,
            files,
            files_kept: kept,
        });
    }
    for digest in digests {
        // In a dry run the paths are still indexed: count those outside the due versions.
        let refs = store.artifact_digest_refs(&digest).await?;
        let in_use = if dry_run {
            let due_refs = report
                .versions
                .iter()
                .map(|v| v.artifact_path.as_str())
                .chain(
                    report
                        .logged_models
                        .iter()
                        .map(|m| m.artifact_path.as_str()),
                )
                .filter(|d| !d.is_empty());
            let mut n = refs.len();
            for path in &refs {
                if due_refs.clone().any(|d| under(path, d))
                    && !protected.iter().any(|p| under(path, p))
                {
                    n -= 1;
                }
            }
            n > 0
        } else {
            !refs.is_empty()
        };
        if in_use {
            report.blobs_shared += 1;
            continue;
        }
        let blob = crate::artifacts::blob_path(&st.artifact_root, &digest);
        let size = tokio::fs::metadata(&blob)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if !dry_run {
            match tokio::fs::remove_file(&blob).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(MlflowError::internal(format!(
                        "deleting blob {} failed: {e}",
                        blob.display()
                    )));
                }
            }
        }
        report.blobs_deleted += 1;
        report.bytes_freed += size;
    }
    Ok(report)
}

/// Runs [`collect`] every `every` while the server runs, audited as `system`.
pub fn spawn_sweeper(st: RegistryState, retention: Duration, every: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let now = Utc::now().timestamp_millis();
            match collect(&st, "system", retention, now, false).await {
                Ok(r) if !r.versions.is_empty() || !r.logged_models.is_empty() => tracing::info!(
                    versions = r.versions.len(),
                    logged_models = r.logged_models.len(),
                    blobs = r.blobs_deleted,
                    bytes = r.bytes_freed,
                    "deleted artifacts of archived and sunset model versions and deleted logged models"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e.message, "artifact retention sweep failed"),
            }
        }
    });
}
