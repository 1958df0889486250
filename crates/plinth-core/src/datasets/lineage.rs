//! A dataset version as an OpenLineage dataset with the standard `schema`,
//! `dataQualityMetrics` and `dataQualityAssertions` facets, for lineage graphs.
//!
//! Naming follows OpenLineage's rule for local files: namespace `file`, name the absolute path
//! of the data the version was read from (an uploaded file: where the server keeps it).

use std::path::Path;

use plinth_contracts::profile::{ColumnProfile, DatasetProfile};
use serde_json::{Map, Value, json};

use crate::{CoreError, Platform};
use plinth_types::Identity;
use plinth_types::api::DatasetVersion;

/// The `_producer` of every facet: this software and its version, as a URI.
pub const PRODUCER: &str = concat!("urn:plinth:plinth-server:", env!("CARGO_PKG_VERSION"));
pub const SCHEMA_FACET_URL: &str =
    "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
pub const METRICS_FACET_URL: &str = "https://openlineage.io/spec/facets/1-0-2/DataQualityMetricsInputDatasetFacet.json#/$defs/DataQualityMetricsInputDatasetFacet";
pub const ASSERTIONS_FACET_URL: &str = "https://openlineage.io/spec/facets/1-0-1/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet";

/// Schema fields from the contract's schema object that the version was checked against (the
/// one the report names, else the first); a contract without properties falls back to the
/// profile's columns and their Arrow types.
fn schema_fields(contract: &Value, object: &str, profile: Option<&DatasetProfile>) -> Vec<Value> {
    let objects: Vec<&Value> = contract
        .get("schema")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let chosen = objects
        .iter()
        .find(|o| o.get("name").and_then(Value::as_str) == Some(object))
        .or_else(|| objects.first());
    let props = chosen
        .and_then(|o| o.get("properties"))
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty());
    if let Some(props) = props {
        return props
            .iter()
            .filter_map(|p| {
                let name = p
                    .get("physicalName")
                    .or_else(|| p.get("name"))
                    .and_then(Value::as_str)?;
                let mut f = Map::new();
                f.insert("name".into(), json!(name));
                let ty = p
                    .get("physicalType")
                    .or_else(|| p.get("logicalType"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| {
                        profile
                            .and_then(|pr| pr.column(name))
                            .map(|c| c.data_type.clone())
                    });
                if let Some(ty) = ty {
                    f.insert("type".into(), json!(ty));
                }
                if let Some(d) = p.get("description").and_then(Value::as_str) {
                    f.insert("description".into(), json!(d));
                }
                Some(Value::Object(f))
            })
            .collect();
    }
    profile
        .map(|p| {
            p.columns
                .iter()
                .map(|c| json!({"name": c.name, "type": c.data_type}))
                .collect()
        })
        .unwrap_or_default()
}

fn column_metrics(c: &ColumnProfile) -> Value {
    let mut m = Map::new();
    m.insert("nullCount".into(), json!(c.nulls));
    m.insert("distinctCount".into(), json!(c.distinct_estimate));
    m.insert("count".into(), json!(c.count));
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    if let Some(v) = finite(c.min) {
        m.insert("min".into(), json!(v));
    }
    if let Some(v) = finite(c.max) {
        m.insert("max".into(), json!(v));
    }
    let values = c.count.saturating_sub(c.nulls + c.nans);
    if let Some(mean) = finite(c.mean) {
        m.insert("sum".into(), json!(mean * values as f64));
    }
    if let Some(q) = &c.quantiles {
        let pairs = [
            ("0.01", q.p01),
            ("0.05", q.p05),
            ("0.25", q.p25),
            ("0.5", q.p50),
            ("0.75", q.p75),
            ("0.95", q.p95),
            ("0.99", q.p99),
        ];
        let qs: Map<String, Value> = pairs
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        m.insert("quantiles".into(), Value::Object(qs));
    }
    Value::Object(m)
}

/// The OpenLineage dataset object for one version.
pub fn lineage_dataset(
    contract: &Value,
    version: &DatasetVersion,
    profile: Option<&DatasetProfile>,
) -> Value {
    let spec = &version.spec;
    let name = std::path::absolute(Path::new(&spec.path))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| spec.path.clone());
    let report = &spec.report;
    let object = report.get("object").and_then(Value::as_str).unwrap_or("");
    let mut facets = Map::new();
    facets.insert(
        "schema".into(),
        json!({
            "_producer": PRODUCER,
            "_schemaURL": SCHEMA_FACET_URL,
            "fields": schema_fields(contract, object, profile),
        }),
    );
    let mut metrics = Map::new();
    metrics.insert("_producer".into(), json!(PRODUCER));
    metrics.insert("_schemaURL".into(), json!(METRICS_FACET_URL));
    metrics.insert("rowCount".into(), json!(spec.rows));
    if let Some(b) = spec.bytes {
        metrics.insert("bytes".into(), json!(b));
    }
    if let Some(files) = report.get("files").and_then(Value::as_u64) {
        metrics.insert("fileCount".into(), json!(files));
    }
    let columns: Map<String, Value> = profile
        .map(|p| {
            p.columns
                .iter()
                .map(|c| (c.name.clone(), column_metrics(c)))
                .collect()
        })
        .unwrap_or_default();
    metrics.insert("columnMetrics".into(), Value::Object(columns));
    facets.insert("dataQualityMetrics".into(), Value::Object(metrics));
    let assertions: Vec<Value> = report
        .get("checks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let success = match c.get("status").and_then(Value::as_str)? {
                "passed" => true,
                "failed" | "warning" | "error" => false,
                _ => return None,
            };
            let mut a = Map::new();
            a.insert(
                "assertion".into(),
                c.get("rule").cloned().unwrap_or(json!("")),
            );
            a.insert("success".into(), json!(success));
            if let Some(p) = c.get("property").and_then(Value::as_str) {
                a.insert("column".into(), json!(p));
            }
            Some(Value::Object(a))
        })
        .collect();
    facets.insert(
        "dataQualityAssertions".into(),
        json!({
            "_producer": PRODUCER,
            "_schemaURL": ASSERTIONS_FACET_URL,
            "assertions": assertions,
        }),
    );
    json!({
        "namespace": "file",
        "name": name,
        "facets": facets,
    })
}

impl Platform {
    /// Version `version` of contract `name`'s dataset as an OpenLineage dataset with its
    /// schema, data-quality metrics and assertions facets. Everyone may read it.
    pub async fn dataset_lineage(
        &self,
        who: &Identity,
        name: &str,
        version: u64,
    ) -> Result<Value, CoreError> {
        let contract = self.contract_object(name).await?;
        let v = self.dataset_version(who, name, version).await?;
        let profile = if v.spec.profiled {
            Some(self.dataset_profile(who, name, version).await?)
        } else {
            None
        };
        Ok(lineage_dataset(
            &contract.document.spec,
            &v,
            profile.as_ref(),
        ))
    }
}
