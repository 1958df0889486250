//! The drift reference of a contract's dataset and drift between two stored profiles, with
//! per-column thresholds from the contract's ODCS `customProperties`.

use std::collections::BTreeMap;

use plinth_config::kinds::DATASET_REFERENCE_KIND;
use plinth_contracts::drift::{
    ColumnDrift, DriftKind, DriftOptions, DriftSource, Thresholds, Verdict, compare_profiles,
};
use plinth_store::{Batch, Op, Precondition, StoreError};
use plinth_types::api::{DatasetColumnDrift, DatasetDrift, DatasetReference, DriftThresholds};
use plinth_types::audit::NewAuditEvent;
use plinth_types::{API_VERSION, Document, Identity, ObjectMeta, StoredObject};
use serde_json::Value;

use crate::{CoreError, Platform, document_digest};

/// The ODCS `customProperties` keys on a schema property that override its drift thresholds.
pub const DRIFT_PSI: &str = "plinth.driftPsi";
pub const DRIFT_KS_PVALUE: &str = "plinth.driftKsPvalue";
pub const DRIFT_JS: &str = "plinth.driftJs";
pub const DRIFT_CHI2_PVALUE: &str = "plinth.driftChi2Pvalue";

const CONFLICT_RETRIES: usize = 5;

fn view_thresholds(t: &Thresholds) -> DriftThresholds {
    DriftThresholds {
        psi: t.psi,
        ks_pvalue: t.ks_pvalue,
        js: t.js,
        chi2_pvalue: t.chi2_pvalue,
    }
}

fn reference_view(o: &StoredObject) -> Option<DatasetReference> {
    Some(DatasetReference {
        contract: o.document.spec.get("contract")?.as_str()?.to_string(),
        version: o.document.spec.get("version")?.as_u64()?,
        set_at: o.updated_at.clone(),
        set_by: o.updated_by.clone(),
    })
}

/// A threshold value: a number, or a string holding one.
fn threshold_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Per-column thresholds from the contract's `schema[].properties[].customProperties`
/// (`[{property: plinth.driftPsi, value: 0.3}, ...]`); each key overrides one default. A value
/// that is not a number in range is an error naming the property.
pub fn column_thresholds(
    contract: &Value,
    defaults: &Thresholds,
) -> Result<BTreeMap<String, Thresholds>, String> {
    let mut out = BTreeMap::new();
    let objects = contract.get("schema").and_then(Value::as_array);
    for (oi, object) in objects.into_iter().flatten().enumerate() {
        let props = object.get("properties").and_then(Value::as_array);
        for (pi, prop) in props.into_iter().flatten().enumerate() {
            let Some(custom) = prop.get("customProperties").and_then(Value::as_array) else {
                continue;
            };
            let Some(name) = prop
                .get("physicalName")
                .or_else(|| prop.get("name"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let mut t = *defaults;
            let mut any = false;
            for (ci, cp) in custom.iter().enumerate() {
                let Some(key) = cp.get("property").and_then(Value::as_str) else {
                    continue;
                };
                if !key.starts_with("plinth.drift") {
                    continue;
                }
                let at = format!("schema[{oi}].properties[{pi}].customProperties[{ci}]");
                let v = cp.get("value").and_then(threshold_value).ok_or_else(|| {
                    format!(
                        "{at}: {key} must be a number, not {}",
                        cp.get("value").unwrap_or(&Value::Null)
                    )
                })?;
                let probability = |v: f64| {
                    if (0.0..=1.0).contains(&v) {
                        Ok(v)
                    } else {
                        Err(format!("{at}: {key} must be between 0 and 1, not {v}"))
                    }
                };
                match key {
                    DRIFT_PSI if v.is_finite() && v >= 0.0 => t.psi = v,
                    DRIFT_PSI => return Err(format!("{at}: {key} must be at least 0, not {v}")),
                    DRIFT_KS_PVALUE => t.ks_pvalue = Some(probability(v)?),
                    DRIFT_JS => t.js = probability(v)?,
                    DRIFT_CHI2_PVALUE => t.chi2_pvalue = Some(probability(v)?),
                    other => {
                        return Err(format!(
                            "{at}: unknown drift setting {other:?}; use {DRIFT_PSI}, {DRIFT_KS_PVALUE}, {DRIFT_JS} or {DRIFT_CHI2_PVALUE}"
                        ));
                    }
                }
                any = true;
            }
            if any {
                out.insert(name.to_string(), t);
            }
        }
    }
    Ok(out)
}

fn column_view(c: ColumnDrift, thresholds: &Thresholds) -> DatasetColumnDrift {
    DatasetColumnDrift {
        name: c.name,
        kind: match c.kind {
            DriftKind::Numeric => "numeric".into(),
            DriftKind::Categorical => "categorical".into(),
        },
        source: match c.source {
            DriftSource::Exact => "exact".into(),
            DriftSource::Profile => "profile".into(),
        },
        reference_count: c.reference_count,
        current_count: c.current_count,
        psi: c.psi,
        ks_statistic: c.ks_statistic,
        ks_pvalue: c.ks_pvalue,
        js_distance: c.js_distance,
        chi2: c.chi2,
        chi2_pvalue: c.chi2_pvalue,
        thresholds: view_thresholds(thresholds),
        drifted: c.drifted,
        reason: c.reason,
    }
}

impl Platform {
    /// Makes version `version` the reference that drift of contract `name`'s dataset is measured
    /// against by default. Admins and maintainers; recorded in the audit log.
    pub async fn set_dataset_reference(
        &self,
        who: &Identity,
        name: &str,
        version: u64,
    ) -> Result<DatasetReference, CoreError> {
        self.require_dataset_writer(who, "set dataset references")?;
        let v = self.dataset_version(who, name, version).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let existing = self.store.get_object(DATASET_REFERENCE_KIND, name).await?;
            let document = Document {
                api_version: API_VERSION.to_string(),
                kind: DATASET_REFERENCE_KIND.to_string(),
                metadata: ObjectMeta {
                    name: name.to_string(),
                    labels: [("contract".to_string(), name.to_string())].into(),
                    ..Default::default()
                },
                spec: serde_json::json!({"contract": name, "version": version, "dataset": v.name}),
            };
            let digest = document_digest(&document);
            let ts = self.now();
            let (generation, created_at, precondition, before) = match &existing {
                Some(o) => (
                    o.generation + 1,
                    o.created_at.clone(),
                    Precondition::Generation(o.generation),
                    Some(o.digest.clone()),
                ),
                None => (1, ts.clone(), Precondition::Absent, None),
            };
            let object = StoredObject {
                kind: DATASET_REFERENCE_KIND.to_string(),
                name: name.to_string(),
                team: None,
                document,
                digest: digest.clone(),
                generation,
                created_at,
                updated_at: ts.clone(),
                updated_by: who.actor(),
            };
            let event = NewAuditEvent {
                ts,
                actor: who.actor(),
                action: "dataset.reference".into(),
                kind: DATASET_REFERENCE_KIND.to_string(),
                name: name.to_string(),
                team: None,
                before_digest: before,
                after_digest: Some(digest),
                detail: serde_json::json!({
                    "contract": name,
                    "version": version,
                    "previous": existing
                        .as_ref()
                        .and_then(|o| o.document.spec.get("version").cloned()),
                }),
            };
            let batch = Batch {
                ops: vec![Op::PutObject {
                    object: object.clone(),
                    precondition,
                }],
                events: vec![event],
            };
            match self.store.commit(batch).await {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) if attempt < CONFLICT_RETRIES => continue,
                Err(e) => return Err(e.into()),
            }
            return reference_view(&object)
                .ok_or_else(|| CoreError::invalid("cannot read back the reference"));
        }
    }

    /// The stored drift reference of contract `name`'s dataset, if one was set.
    pub async fn dataset_reference(
        &self,
        _who: &Identity,
        name: &str,
    ) -> Result<Option<DatasetReference>, CoreError> {
        self.contract_object(name).await?;
        Ok(self
            .store
            .get_object(DATASET_REFERENCE_KIND, name)
            .await?
            .as_ref()
            .and_then(reference_view))
    }

    /// Drift of contract `name`'s dataset between two versions' stored profiles. `current`
    /// defaults to the newest version; `reference` to the stored reference, else version 1.
    pub async fn dataset_drift(
        &self,
        who: &Identity,
        name: &str,
        reference: Option<u64>,
        current: Option<u64>,
    ) -> Result<DatasetDrift, CoreError> {
        let contract = self.contract_object(name).await?;
        let current = match current {
            Some(c) => c,
            None => self
                .list_dataset_versions(who, name)
                .await?
                .first()
                .map(|v| v.spec.version)
                .ok_or_else(|| {
                    CoreError::NotFound(format!(
                        "DataContract {name:?} has no dataset versions yet; register one first"
                    ))
                })?,
        };
        let (reference, reference_from) = match reference {
            Some(r) => (r, "query"),
            None => match self.dataset_reference(who, name).await? {
                Some(r) => (r.version, "stored"),
                None => (1, "first"),
            },
        };
        let ref_profile = self.dataset_profile(who, name, reference).await?;
        let cur_profile = self.dataset_profile(who, name, current).await?;
        let defaults = Thresholds::default();
        let per_column = column_thresholds(&contract.document.spec, &defaults)
            .map_err(|e| CoreError::invalid(format!("DataContract/{name}: {e}")))?;
        let options = DriftOptions {
            thresholds: defaults,
            per_column: per_column.clone(),
            ..DriftOptions::default()
        };
        let report = compare_profiles(&ref_profile, &cur_profile, &options).map_err(|e| {
            CoreError::invalid(format!("drift of {name} v{reference} -> v{current}: {e}"))
        })?;
        Ok(DatasetDrift {
            contract: name.to_string(),
            reference,
            current,
            reference_from: reference_from.to_string(),
            verdict: match report.verdict {
                Verdict::Drift => "drift".into(),
                Verdict::NoDrift => "no_drift".into(),
            },
            drifted_columns: report.drifted_columns,
            thresholds: view_thresholds(&defaults),
            columns: report
                .columns
                .into_iter()
                .map(|c| {
                    let t = per_column.get(&c.name).copied().unwrap_or(defaults);
                    column_view(c, &t)
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_properties_override_column_thresholds() {
        let contract = json!({"schema": [{"name": "w", "properties": [
            {"name": "temp", "customProperties": [
                {"property": "plinth.driftPsi", "value": 0.5},
                {"property": "plinth.driftKsPvalue", "value": "0.001"},
                {"property": "owner", "value": "ops"}]},
            {"name": "dewp"}]}]});
        let d = Thresholds::default();
        let t = column_thresholds(&contract, &d).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t["temp"].psi, 0.5);
        assert_eq!(t["temp"].ks_pvalue, Some(0.001));
        assert_eq!(t["temp"].js, d.js);
    }

    #[test]
    fn bad_thresholds_name_the_property() {
        let d = Thresholds::default();
        let bad = json!({"schema": [{"properties": [{"name": "x", "customProperties": [
            {"property": "plinth.driftJs", "value": 3}]}]}]});
        let e = column_thresholds(&bad, &d).unwrap_err();
        assert!(
            e.starts_with("schema[0].properties[0].customProperties[0]: plinth.driftJs must be between 0 and 1"),
            "{e}"
        );
        let typo = json!({"schema": [{"properties": [{"name": "x", "customProperties": [
            {"property": "plinth.driftPSI", "value": 0.1}]}]}]});
        let e = column_thresholds(&typo, &d).unwrap_err();
        assert!(e.contains("unknown drift setting"), "{e}");
        let text = json!({"schema": [{"properties": [{"name": "x", "customProperties": [
            {"property": "plinth.driftPsi", "value": "high"}]}]}]});
        assert!(
            column_thresholds(&text, &d)
                .unwrap_err()
                .contains("must be a number")
        );
    }
}
