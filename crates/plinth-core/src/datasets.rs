//! Dataset versions: a data file or folder checked against a stored DataContract, recorded as a
//! server-managed `DatasetVersion` object with an audit event, plus its per-column profile as a
//! `DatasetProfile` object of the same name (written in the same batch). Drift between stored
//! profiles, the drift reference and OpenLineage facets live in the submodules.

mod drift;
mod lineage;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use plinth_config::kinds::{DATASET_PROFILE_KIND, DATASET_VERSION_KIND};
use plinth_contracts::check::{CheckOptions, Status, check_path};
use plinth_contracts::odcs::Contract;
use plinth_contracts::profile::DatasetProfile;
use plinth_contracts::run::profile_path;
use plinth_store::{Batch, Op, Precondition, StoreError};
use plinth_types::api::{DatasetVersion, DatasetVersionSpec, RegisterDatasetRequest};
use plinth_types::audit::NewAuditEvent;
use plinth_types::{API_VERSION, Document, Identity, ObjectMeta, Role, StoredObject};
use sha2::{Digest, Sha256};

use crate::{CoreError, Platform, document_digest};

pub(crate) const CONTRACT_KIND: &str = "DataContract";
const CONFLICT_RETRIES: usize = 5;

fn to_view(o: StoredObject) -> Option<DatasetVersion> {
    let spec: DatasetVersionSpec = serde_json::from_value(o.document.spec).ok()?;
    Some(DatasetVersion {
        name: o.name,
        registered_at: o.created_at,
        registered_by: o.updated_by,
        spec,
    })
}

impl Platform {
    /// Checks the data at `req.path` against contract `name` and records the result as the
    /// contract's next dataset version. Admins and maintainers only.
    pub async fn register_dataset(
        &self,
        who: &Identity,
        name: &str,
        req: RegisterDatasetRequest,
    ) -> Result<DatasetVersion, CoreError> {
        self.register(who, name, req, None).await
    }

    /// Registers a file uploaded to the server (already stored at `path`, under its digest) as
    /// the contract's next version; `filename` is the name the client gave.
    pub async fn register_uploaded_dataset(
        &self,
        who: &Identity,
        name: &str,
        path: &Path,
        filename: &str,
        now: Option<String>,
    ) -> Result<DatasetVersion, CoreError> {
        let req = RegisterDatasetRequest {
            path: path.display().to_string(),
            now,
        };
        self.register(who, name, req, Some(filename.to_string()))
            .await
    }

    /// Fails unless `who` may register dataset versions and set references (maintainers and
    /// admins): checked before an upload is accepted, so a viewer's bytes never reach disk.
    pub fn require_dataset_writer(&self, who: &Identity, what: &str) -> Result<(), CoreError> {
        if who.role < Role::Maintainer {
            return Err(CoreError::PermissionDenied(format!(
                "{} (role {}) may not {what}: requires maintainer or admin",
                who.actor(),
                who.role
            )));
        }
        Ok(())
    }

    /// The stored DataContract object `name`, or `NotFound`.
    pub async fn contract_object(&self, name: &str) -> Result<StoredObject, CoreError> {
        self.store
            .get_object(CONTRACT_KIND, name)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("DataContract {name:?} not found")))
    }

    async fn register(
        &self,
        who: &Identity,
        name: &str,
        req: RegisterDatasetRequest,
        upload: Option<String>,
    ) -> Result<DatasetVersion, CoreError> {
        self.require_dataset_writer(who, "register datasets")?;
        let obj = self.contract_object(name).await?;
        let contract = Contract::from_value(obj.document.spec.clone()).map_err(|e| {
            CoreError::invalid(format!("stored DataContract/{name} does not parse: {e}"))
        })?;
        if req.path.trim().is_empty() {
            return Err(CoreError::invalid("path: must not be empty"));
        }
        let now = match &req.now {
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    CoreError::invalid(format!(
                        "now: {t:?} is not an RFC 3339 time such as 2026-11-28T10:00:00Z"
                    ))
                })?
                .with_timezone(&Utc),
            None => (self.clock)(),
        };
        let path = PathBuf::from(&req.path);
        let opts = CheckOptions {
            now,
            ..CheckOptions::default()
        };
        let (report, digest, bytes, profile) = tokio::task::spawn_blocking(move || {
            let report = check_path(&contract, &path, &opts);
            // Only data that could be opened is digested and profiled (never a whole tree by
            // mistake). A profile that fails (unreadable rows) leaves the version without one.
            if report.files == 0 {
                return (report, None, None, None);
            }
            let digest = content_digest(&path).ok();
            let bytes = content_size(&path).ok();
            let profile = match profile_path(&path, 0) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dataset not profiled");
                    None
                }
            };
            (report, digest, bytes, profile)
        })
        .await
        .map_err(|e| CoreError::invalid(format!("the check did not finish: {e}")))?;
        let status = match report.status {
            Status::Error => "error",
            Status::Failed => "failed",
            _ => "passed",
        };
        let mut counts = BTreeMap::new();
        for c in &report.checks {
            *counts.entry(c.status.as_str().to_string()).or_insert(0u64) += 1;
        }
        let freshness = report
            .checks
            .iter()
            .find(|c| c.kind == "sla" && c.rule == "freshness")
            .and_then(|c| c.measured)
            .and_then(|age| {
                let us = now.timestamp_micros() - (age * 1e6).round() as i64;
                DateTime::<Utc>::from_timestamp_micros(us)
            })
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
        let report_json = serde_json::to_value(&report).unwrap_or_default();
        let profile_json = profile
            .as_ref()
            .map(|p| serde_json::to_value(p).unwrap_or_default());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let previous = self.dataset_version_objects(name).await?.len() as u64;
            let version = previous + 1;
            let spec = DatasetVersionSpec {
                contract: name.to_string(),
                version,
                path: req.path.clone(),
                digest: digest.clone(),
                rows: report.rows,
                status: status.to_string(),
                counts: counts.clone(),
                checked_at: now.to_rfc3339_opts(SecondsFormat::Micros, true),
                freshness: freshness.clone(),
                bytes,
                upload: upload.clone(),
                profiled: profile_json.is_some(),
                report: report_json.clone(),
            };
            let vname = format!("{name}-v{version}");
            let document = Document {
                api_version: API_VERSION.to_string(),
                kind: DATASET_VERSION_KIND.to_string(),
                metadata: ObjectMeta {
                    name: vname.clone(),
                    labels: [("contract".to_string(), name.to_string())].into(),
                    ..Default::default()
                },
                spec: serde_json::to_value(&spec).unwrap_or_default(),
            };
            let doc_digest = document_digest(&document);
            let ts = self.now();
            let object = StoredObject {
                kind: DATASET_VERSION_KIND.to_string(),
                name: vname.clone(),
                team: None,
                document,
                digest: doc_digest.clone(),
                generation: 1,
                created_at: ts.clone(),
                updated_at: ts.clone(),
                updated_by: who.actor(),
            };
            let event = NewAuditEvent {
                ts: ts.clone(),
                actor: who.actor(),
                action: "dataset.register".into(),
                kind: DATASET_VERSION_KIND.to_string(),
                name: vname.clone(),
                team: None,
                before_digest: None,
                after_digest: Some(doc_digest),
                detail: serde_json::json!({
                    "contract": name,
                    "version": version,
                    "path": req.path,
                    "status": status,
                    "digest": digest,
                    "rows": report.rows,
                    "upload": upload,
                }),
            };
            let mut ops = vec![Op::PutObject {
                object: object.clone(),
                precondition: Precondition::Absent,
            }];
            if let Some(p) = &profile_json {
                ops.push(Op::PutObject {
                    object: self.profile_object(name, version, &vname, p, &who.actor(), &ts),
                    precondition: Precondition::None,
                });
            }
            let batch = Batch {
                ops,
                events: vec![event],
            };
            match self.store.commit(batch).await {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) if attempt < CONFLICT_RETRIES => continue,
                Err(e) => return Err(e.into()),
            }
            return to_view(object).ok_or_else(|| CoreError::invalid("cannot read back version"));
        }
    }

    /// The dataset versions of contract `name`, newest first. Everyone may read them.
    pub async fn list_dataset_versions(
        &self,
        _who: &Identity,
        name: &str,
    ) -> Result<Vec<DatasetVersion>, CoreError> {
        let versions = self.dataset_version_objects(name).await?;
        if versions.is_empty() && self.store.get_object(CONTRACT_KIND, name).await?.is_none() {
            return Err(CoreError::NotFound(format!(
                "DataContract {name:?} not found"
            )));
        }
        let mut out: Vec<DatasetVersion> = versions.into_iter().filter_map(to_view).collect();
        out.sort_by_key(|v| std::cmp::Reverse(v.spec.version));
        Ok(out)
    }

    /// The newest version of each contract's dataset, by contract name (for metrics and the
    /// console; every caller may read dataset versions).
    pub async fn latest_dataset_versions(
        &self,
    ) -> Result<BTreeMap<String, DatasetVersion>, CoreError> {
        let mut out: BTreeMap<String, DatasetVersion> = BTreeMap::new();
        for v in self
            .store
            .list_objects(DATASET_VERSION_KIND)
            .await?
            .into_iter()
            .filter_map(to_view)
        {
            let newer = out
                .get(&v.spec.contract)
                .is_none_or(|cur| v.spec.version > cur.spec.version);
            if newer {
                out.insert(v.spec.contract.clone(), v);
            }
        }
        Ok(out)
    }

    async fn dataset_version_objects(&self, name: &str) -> Result<Vec<StoredObject>, CoreError> {
        Ok(self
            .store
            .list_objects(DATASET_VERSION_KIND)
            .await?
            .into_iter()
            .filter(|o| o.document.spec.get("contract").and_then(|c| c.as_str()) == Some(name))
            .collect())
    }

    /// Version `version` of contract `name`'s dataset. Everyone may read it.
    pub async fn dataset_version(
        &self,
        _who: &Identity,
        name: &str,
        version: u64,
    ) -> Result<DatasetVersion, CoreError> {
        let obj = self
            .store
            .get_object(DATASET_VERSION_KIND, &format!("{name}-v{version}"))
            .await?
            .filter(|o| o.document.spec.get("contract").and_then(|c| c.as_str()) == Some(name));
        match obj.and_then(to_view) {
            Some(v) => Ok(v),
            None => {
                self.contract_object(name).await?;
                Err(CoreError::NotFound(format!(
                    "DataContract {name:?} has no dataset version {version}"
                )))
            }
        }
    }

    /// The per-column profile stored with version `version` of contract `name`'s dataset.
    pub async fn dataset_profile(
        &self,
        who: &Identity,
        name: &str,
        version: u64,
    ) -> Result<DatasetProfile, CoreError> {
        let v = self.dataset_version(who, name, version).await?;
        let obj = self
            .store
            .get_object(DATASET_PROFILE_KIND, &v.name)
            .await?
            .ok_or_else(|| {
                CoreError::NotFound(format!(
                    "{} has no profile: its data could not be read (status {})",
                    v.name, v.spec.status
                ))
            })?;
        let profile = obj
            .document
            .spec
            .get("profile")
            .cloned()
            .unwrap_or_default();
        serde_json::from_value(profile).map_err(|e| {
            CoreError::invalid(format!(
                "stored DatasetProfile/{} does not parse: {e}",
                v.name
            ))
        })
    }

    fn profile_object(
        &self,
        contract: &str,
        version: u64,
        vname: &str,
        profile: &serde_json::Value,
        actor: &str,
        ts: &str,
    ) -> StoredObject {
        let document = Document {
            api_version: API_VERSION.to_string(),
            kind: DATASET_PROFILE_KIND.to_string(),
            metadata: ObjectMeta {
                name: vname.to_string(),
                labels: [("contract".to_string(), contract.to_string())].into(),
                ..Default::default()
            },
            spec: serde_json::json!({
                "contract": contract,
                "version": version,
                "profile": profile,
            }),
        };
        StoredObject {
            kind: DATASET_PROFILE_KIND.to_string(),
            name: vname.to_string(),
            team: None,
            digest: document_digest(&document),
            document,
            generation: 1,
            created_at: ts.to_string(),
            updated_at: ts.to_string(),
            updated_by: actor.to_string(),
        }
    }
}

/// Bytes of a file, or of every file below a folder (the same files [`content_digest`] reads).
pub fn content_size(path: &Path) -> std::io::Result<u64> {
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        let mut total = 0;
        for f in &files {
            total += std::fs::metadata(f)?.len();
        }
        Ok(total)
    } else {
        Ok(std::fs::metadata(path)?.len())
    }
}

/// `sha256:<hex>` of a file's bytes, read in blocks; for a folder, of the lines
/// `<relative path> <sha256 hex>` of every file below it in path order (names starting with
/// `.` or `_` skipped).
pub fn content_digest(path: &Path) -> std::io::Result<String> {
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files.sort();
        let mut h = Sha256::new();
        for f in &files {
            let rel = f.strip_prefix(path).unwrap_or(f);
            h.update(format!("{} {}\n", rel.display(), file_sha256(f)?).as_bytes());
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    } else {
        Ok(format!("sha256:{}", file_sha256(path)?))
    }
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let p = entry.path();
        // file_type does not follow symbolic links, so a link cycle cannot recurse forever.
        if entry.file_type()?.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::content_digest;

    #[test]
    fn digest_of_a_file_and_of_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
        let d = content_digest(&dir.path().join("a.csv")).unwrap();
        // sha256("x\n1\n")
        assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
        let folder = content_digest(dir.path()).unwrap();
        std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
        assert_eq!(content_digest(dir.path()).unwrap(), folder);
        std::fs::write(dir.path().join("b.csv"), "x\n2\n").unwrap();
        assert_ne!(content_digest(dir.path()).unwrap(), folder);
    }
}
