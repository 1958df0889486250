//! Declarative resources: apply (atomic, idempotent, with a diff), get, list, delete; and the
//! read side of the audit log and the overview.

use std::collections::{BTreeMap, BTreeSet};

use plinth_config::kinds::{KINDS, kind_order};
use plinth_config::{KindInfo, Scope, ValidObject, lookup_kind, validate_document};
use plinth_store::{Batch, Op, Precondition, StoreError};
use plinth_types::api::{
    ApplyAction, ApplyResponse, ApplyResult, DeleteResponse, Overview, SourcedDocument,
};
use plinth_types::audit::{AuditEvent, AuditFilter, AuditVerification, NewAuditEvent};
use plinth_types::spec::PoolSpec;
use plinth_types::{Document, Identity, ResourceView, Role, StoredObject};
use sha2::{Digest, Sha256};

use crate::auth::authorize_read;
use crate::diff::diff_documents;
use crate::{CoreError, Platform};

/// At most this many documents in one apply.
pub const MAX_DOCUMENTS: usize = 1000;
const CONFLICT_RETRIES: usize = 5;

/// SHA-256 of the document's canonical JSON (keys sorted).
pub fn document_digest(doc: &Document) -> String {
    match encode_document(doc) {
        Some((_, digest)) => digest,
        None => {
            let value = serde_json::to_value(doc).unwrap_or(serde_json::Value::Null);
            hex::encode(Sha256::digest(value.to_string().as_bytes()))
        }
    }
}

/// The document's compact JSON and its [`document_digest`], from one encoding, when that
/// encoding is already canonical: with no labels and no annotations every key of a document is
/// in sorted order (`apiVersion`, `kind`, `metadata` holding only `name`, `spec`, whose maps
/// keep their keys sorted). `None` otherwise (or if it does not encode).
pub fn encode_document(doc: &Document) -> Option<(String, String)> {
    if !doc.metadata.labels.is_empty() || !doc.metadata.annotations.is_empty() {
        return None;
    }
    let json = serde_json::to_string(doc).ok()?;
    let digest = hex::encode(Sha256::digest(json.as_bytes()));
    Some((json, digest))
}

fn kind_info(kind: &str) -> Result<&'static KindInfo, CoreError> {
    lookup_kind(kind).ok_or_else(|| {
        let known: Vec<_> = KINDS.iter().map(|k| k.name).collect();
        CoreError::invalid(format!(
            "unknown kind {kind:?}; known kinds: {}",
            known.join(", ")
        ))
    })
}

/// May `who` create, change or delete an object of `kind` owned by `team`?
fn authorize_write(
    who: &Identity,
    kind: &KindInfo,
    team: Option<&str>,
    verb: &str,
    name: &str,
) -> Result<(), CoreError> {
    let allowed = match kind.scope {
        Scope::Cluster => who.is_admin(),
        Scope::Team => who.role >= Role::Maintainer && team.is_some_and(|t| who.in_team(t)),
    };
    if allowed {
        return Ok(());
    }
    let needs = match kind.scope {
        Scope::Cluster => "admin".to_string(),
        Scope::Team => format!("maintainer of team {}", team.unwrap_or("-")),
    };
    Err(CoreError::PermissionDenied(format!(
        "{} (role {}, team {}) may not {verb} {}/{name}: requires {needs}",
        who.actor(),
        who.role,
        who.team.as_deref().unwrap_or("-"),
        kind.name
    )))
}

fn visible_filter(who: &Identity) -> impl Fn(&StoredObject) -> bool + '_ {
    move |o| authorize_read(who, o.team.as_deref())
}

impl Platform {
    /// Validates every document, then stores all of them in one transaction — or none.
    pub async fn apply(
        &self,
        who: &Identity,
        documents: Vec<SourcedDocument>,
        dry_run: bool,
    ) -> Result<ApplyResponse, CoreError> {
        if documents.is_empty() {
            return Err(CoreError::invalid("no documents to apply"));
        }
        if documents.len() > MAX_DOCUMENTS {
            return Err(CoreError::invalid(format!(
                "{} documents in one apply; at most {MAX_DOCUMENTS}",
                documents.len()
            )));
        }
        let mut valid = Vec::new();
        let mut problems = Vec::new();
        let mut seen = BTreeMap::new();
        for d in &documents {
            match validate_document(d) {
                Ok(v) => {
                    let key = (v.kind, v.name.clone());
                    if let Some(first) = seen.insert(key, v.index) {
                        problems.push(
                            v.error(
                                "metadata.name",
                                format!(
                                    "{}/{} appears twice in this apply (first at document {})",
                                    v.kind,
                                    v.name,
                                    first.map(|i| i.to_string()).unwrap_or_else(|| "?".into())
                                ),
                            )
                            .to_string(),
                        );
                    }
                    valid.push(v);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            return Err(invalid_documents(problems));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.apply_once(who, &valid, dry_run).await {
                Err(CoreError::Store(StoreError::Conflict(_))) if attempt < CONFLICT_RETRIES => {
                    continue;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(
        &self,
        who: &Identity,
        valid: &[ValidObject],
        dry_run: bool,
    ) -> Result<ApplyResponse, CoreError> {
        let in_batch: BTreeSet<(&str, &str)> =
            valid.iter().map(|v| (v.kind, v.name.as_str())).collect();
        let mut results = Vec::with_capacity(valid.len());
        let mut ops = Vec::new();
        let mut events = Vec::new();
        let mut problems = Vec::new();
        // Apply referenced kinds first so an audit trail reads in a sensible order.
        let mut order: Vec<usize> = (0..valid.len()).collect();
        order.sort_by_key(|&i| kind_order(valid[i].kind));
        let mut slots: Vec<Option<ApplyResult>> = vec![None; valid.len()];
        for i in order {
            let v = &valid[i];
            let kind = kind_info(v.kind)?;
            let current = self.store.get_object(v.kind, &v.name).await?;
            authorize_write(who, kind, v.team.as_deref(), "apply", &v.name)?;
            if let Some(cur) = &current
                && cur.team != v.team
            {
                authorize_write(who, kind, cur.team.as_deref(), "move", &v.name)?;
            }
            for r in &v.references {
                if !in_batch.contains(&(r.kind, r.name.as_str()))
                    && self.store.get_object(r.kind, &r.name).await?.is_none()
                {
                    problems.push(
                        v.error(&r.path, format!("{} {:?} does not exist", r.kind, r.name))
                            .to_string(),
                    );
                }
            }
            let digest = document_digest(&v.document);
            let now = self.now();
            let (action, generation, changes) = match &current {
                Some(cur) if cur.digest == digest => {
                    (ApplyAction::Unchanged, cur.generation, Vec::new())
                }
                Some(cur) => {
                    let before = serde_json::to_value(&cur.document).ok();
                    let after = serde_json::to_value(&v.document).ok();
                    (
                        ApplyAction::Configured,
                        cur.generation + 1,
                        diff_documents(before.as_ref(), after.as_ref()),
                    )
                }
                None => {
                    let after = serde_json::to_value(&v.document).ok();
                    (
                        ApplyAction::Created,
                        1,
                        diff_documents(None, after.as_ref()),
                    )
                }
            };
            if action != ApplyAction::Unchanged {
                let object = StoredObject {
                    kind: v.kind.to_string(),
                    name: v.name.clone(),
                    team: v.team.clone(),
                    document: v.document.clone(),
                    digest: digest.clone(),
                    generation,
                    created_at: current
                        .as_ref()
                        .map(|c| c.created_at.clone())
                        .unwrap_or_else(|| now.clone()),
                    updated_at: now.clone(),
                    updated_by: who.actor(),
                };
                let precondition = match &current {
                    Some(c) => Precondition::Generation(c.generation),
                    None => Precondition::Absent,
                };
                ops.push(Op::PutObject {
                    object,
                    precondition,
                });
                events.push(NewAuditEvent {
                    ts: now,
                    actor: who.actor(),
                    action: if current.is_some() {
                        "resource.update"
                    } else {
                        "resource.create"
                    }
                    .into(),
                    kind: v.kind.to_string(),
                    name: v.name.clone(),
                    team: v.team.clone(),
                    before_digest: current.as_ref().map(|c| c.digest.clone()),
                    after_digest: Some(digest),
                    detail: serde_json::json!({
                        "generation": generation,
                        "file": v.file,
                        "changed": changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
                    }),
                });
            }
            slots[i] = Some(ApplyResult {
                kind: v.kind.to_string(),
                name: v.name.clone(),
                action,
                generation,
                changes,
            });
        }
        if !problems.is_empty() {
            return Err(invalid_documents(problems));
        }
        results.extend(slots.into_iter().flatten());
        if !dry_run && !ops.is_empty() {
            self.store.commit(Batch { ops, events }).await?;
        }
        Ok(ApplyResponse { dry_run, results })
    }

    /// One object, if the caller may read it.
    pub async fn get(
        &self,
        who: &Identity,
        kind: &str,
        name: &str,
    ) -> Result<ResourceView, CoreError> {
        let kind = kind_info(kind)?;
        let obj = self.store.get_object(kind.name, name).await?;
        match obj {
            Some(o) if authorize_read(who, o.team.as_deref()) => Ok(ResourceView::from(o)),
            Some(o) => Err(CoreError::PermissionDenied(format!(
                "{} (team {}) may not read {}/{name}, which belongs to team {}",
                who.actor(),
                who.team.as_deref().unwrap_or("-"),
                kind.name,
                o.team.as_deref().unwrap_or("-")
            ))),
            None => Err(CoreError::NotFound(format!(
                "{} {name:?} not found",
                kind.name
            ))),
        }
    }

    /// Every object of a kind the caller may read, by name.
    pub async fn list(&self, who: &Identity, kind: &str) -> Result<Vec<ResourceView>, CoreError> {
        let kind = kind_info(kind)?;
        let all = self.store.list_objects(kind.name).await?;
        Ok(all
            .into_iter()
            .filter(visible_filter(who))
            .map(ResourceView::from)
            .collect())
    }

    /// Deletes one object unless others still reference it.
    pub async fn delete(
        &self,
        who: &Identity,
        kind: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<DeleteResponse, CoreError> {
        let kind = kind_info(kind)?;
        let Some(obj) = self.store.get_object(kind.name, name).await? else {
            return Err(CoreError::NotFound(format!(
                "{} {name:?} not found",
                kind.name
            )));
        };
        authorize_write(who, kind, obj.team.as_deref(), "delete", name)?;
        let mut users = Vec::new();
        for k in KINDS {
            for other in self.store.list_objects(k.name).await? {
                let sd = SourcedDocument {
                    file: None,
                    index: None,
                    document: serde_json::to_value(&other.document).unwrap_or_default(),
                };
                if let Ok(v) = validate_document(&sd)
                    && v.references
                        .iter()
                        .any(|r| r.kind == kind.name && r.name == name)
                {
                    users.push(format!("{}/{}", other.kind, other.name));
                }
            }
        }
        if !users.is_empty() {
            return Err(CoreError::Conflict(format!(
                "{}/{name} is still referenced by {}; delete or change those first",
                kind.name,
                users.join(", ")
            )));
        }
        let deleted = serde_json::to_value(&obj.document).unwrap_or_default();
        if !dry_run {
            let event = NewAuditEvent {
                ts: self.now(),
                actor: who.actor(),
                action: "resource.delete".into(),
                kind: kind.name.to_string(),
                name: name.to_string(),
                team: obj.team.clone(),
                before_digest: Some(obj.digest.clone()),
                after_digest: None,
                detail: serde_json::json!({"generation": obj.generation}),
            };
            let op = Op::DeleteObject {
                kind: kind.name.to_string(),
                name: name.to_string(),
                precondition: Precondition::Generation(obj.generation),
            };
            self.store
                .commit(Batch {
                    ops: vec![op],
                    events: vec![event],
                })
                .await?;
        }
        Ok(DeleteResponse {
            kind: kind.name.to_string(),
            name: name.to_string(),
            dry_run,
            deleted,
        })
    }

    /// Audit events: all for admins; maintainers see their team's.
    pub async fn audit_log(
        &self,
        who: &Identity,
        mut filter: AuditFilter,
    ) -> Result<Vec<AuditEvent>, CoreError> {
        if who.role < Role::Maintainer {
            return Err(CoreError::PermissionDenied(format!(
                "role {} may not read the audit log; maintainer or admin required",
                who.role
            )));
        }
        if !who.is_admin() {
            match (&filter.team, &who.team) {
                (Some(t), Some(mine)) if t != mine => {
                    return Err(CoreError::PermissionDenied(format!(
                        "may not read team {t}'s audit events"
                    )));
                }
                _ => filter.team = who.team.clone(),
            }
        }
        if let Some(l) = filter.limit
            && !(1..=1000).contains(&l)
        {
            return Err(CoreError::invalid(format!(
                "limit: must be between 1 and 1000, got {l}"
            )));
        }
        for (field, v) in [("since", &filter.since), ("until", &filter.until)] {
            if let Some(v) = v
                && chrono::DateTime::parse_from_rfc3339(v).is_err()
            {
                return Err(CoreError::invalid(format!(
                    "{field}: {v:?} is not an RFC 3339 time such as 2026-11-28T10:00:00Z"
                )));
            }
        }
        // Normalize times to the stored form so string comparison is chronological.
        let norm = |v: &Option<String>| {
            v.as_ref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| {
                    t.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                })
        };
        filter.since = norm(&filter.since);
        filter.until = norm(&filter.until);
        Ok(self.store.list_audit(&filter).await?)
    }

    /// Walks the whole hash chain. Admins only: it reads every team's events.
    pub async fn audit_verify(&self, who: &Identity) -> Result<AuditVerification, CoreError> {
        if !who.is_admin() {
            return Err(CoreError::PermissionDenied(format!(
                "role {} may not verify the audit log; admin required",
                who.role
            )));
        }
        Ok(self.store.verify_audit().await?)
    }

    /// Counts and recent activity the caller may see.
    pub async fn overview(&self, who: &Identity) -> Result<Overview, CoreError> {
        let pools = self.list(who, "Pool").await?;
        let teams = self.list(who, "Team").await?;
        let queues = self.list(who, "Queue").await?;
        let (mut gpus, mut cpus, mut nodes) = (0u64, 0u64, 0u64);
        for p in &pools {
            if let Ok(s) = serde_json::from_value::<PoolSpec>(p.spec.clone()) {
                let n = u64::from(s.nodes);
                nodes += n;
                cpus += n * u64::from(s.cpus_per_node);
                gpus += n * s.accelerator.map(|a| u64::from(a.count)).unwrap_or(0);
            }
        }
        let recent = if who.role >= Role::Maintainer {
            let mut f = AuditFilter {
                limit: Some(1000),
                ..Default::default()
            };
            if who.is_admin() {
                let total = self.store.count_audit().await?;
                f.after_seq = Some((total - 10).max(0));
            } else {
                f.team = who.team.clone();
            }
            let mut ev = self.store.list_audit(&f).await?;
            ev.reverse();
            ev.truncate(10);
            ev
        } else {
            Vec::new()
        };
        Ok(Overview {
            pools: pools.len(),
            teams: teams.len(),
            queues: queues.len(),
            gpus,
            cpus,
            nodes,
            audit_events: self.store.count_audit().await?,
            recent,
        })
    }
}

fn invalid_documents(problems: Vec<String>) -> CoreError {
    let message = if problems.len() == 1 {
        problems[0].clone()
    } else {
        format!("{} invalid documents; nothing was applied", problems.len())
    };
    CoreError::Invalid {
        message,
        details: if problems.len() == 1 {
            Vec::new()
        } else {
            problems
        },
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use plinth_types::ObjectMeta;

    fn old_digest(doc: &Document) -> String {
        let value = serde_json::to_value(doc).unwrap();
        hex::encode(Sha256::digest(value.to_string().as_bytes()))
    }

    #[test]
    fn one_encoding_gives_the_canonical_digest() {
        let mut doc = Document {
            api_version: "plinth/v1".into(),
            kind: "Job".into(),
            metadata: ObjectMeta {
                name: "j-1".into(),
                ..ObjectMeta::default()
            },
            spec: serde_json::json!({"z": [1, 2.5, {"b": null, "a": "é\"\u{0}"}], "a": true}),
        };
        let (json, digest) = encode_document(&doc).unwrap();
        assert_eq!(json, serde_json::to_value(&doc).unwrap().to_string());
        assert_eq!(digest, old_digest(&doc));
        assert_eq!(document_digest(&doc), digest);
        doc.metadata.labels.insert("team".into(), "a".into());
        assert!(encode_document(&doc).is_none());
        assert_eq!(document_digest(&doc), old_digest(&doc));
    }
}
