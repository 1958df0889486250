//! What a model version was made from, as typed fields: code commit, dataset versions, feature
//! definitions, prompts, hyper-parameters, eval sets and metrics, deployment config.
//!
//! The fields are read from the version's tags (`plinth.<field>`), falling back to the tags,
//! params and metrics of the MLflow run that produced it, so training code that only uses
//! MLflow (`mlflow.source.git.commit`, `log_params`, `log_metrics`, `set_tag("plinth.datasets",
//! ...)`) fills them in unchanged. Plinth's API writes the same version tags.

use std::collections::{BTreeMap, BTreeSet};

use plinth_store::Store;
use plinth_store::tracking::{KeyValue, ModelVersion};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The MLflow tag that carries a run's git commit.
pub const GIT_COMMIT_TAG: &str = "mlflow.source.git.commit";

pub const TAG_CODE_COMMIT: &str = "plinth.code_commit";
pub const TAG_DATASETS: &str = "plinth.datasets";
pub const TAG_FEATURES: &str = "plinth.features";
pub const TAG_PROMPTS: &str = "plinth.prompts";
pub const TAG_HYPERPARAMETERS: &str = "plinth.hyperparameters";
pub const TAG_EVAL_SETS: &str = "plinth.eval_sets";
pub const TAG_EVAL_METRICS: &str = "plinth.eval_metrics";
pub const TAG_DEPLOYMENT: &str = "plinth.deployment";
/// Set on a deprecated version: `sunset DATE: reason`.
pub const TAG_DEPRECATED: &str = "plinth.deprecated";
/// Set on a registered model: the team that owns it (only its maintainers, or admins, promote,
/// approve, roll back and deprecate its versions).
pub const TAG_TEAM: &str = "plinth.team";

/// Everything a version records about its inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_commit: Option<String>,
    /// Plinth dataset versions (`NAME-vN`) and/or dataset URIs.
    #[serde(default)]
    pub datasets: Vec<String>,
    #[serde(default)]
    pub features: Vec<String>,
    /// Prompt name to its text or reference.
    #[serde(default)]
    pub prompts: BTreeMap<String, String>,
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, String>,
    #[serde(default)]
    pub eval_sets: Vec<String>,
    #[serde(default)]
    pub eval_metrics: BTreeMap<String, f64>,
    /// Deployment settings; values other than strings are kept as JSON text.
    #[serde(default)]
    pub deployment: BTreeMap<String, String>,
    /// Tags that could not be read (malformed JSON); the field is then left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Fields to set on a version (`PATCH .../manifest`, and registration); absent fields are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_sets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_metrics: Option<BTreeMap<String, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub deployment: Option<BTreeMap<String, Value>>,
}

/// A Plinth dataset version name, `NAME-vN`, split into the contract and the number.
pub fn plinth_dataset_version(s: &str) -> Option<(&str, u64)> {
    if s.contains(':') || s.contains('/') {
        return None;
    }
    let (name, n) = s.rsplit_once("-v")?;
    let n = n.parse::<u64>().ok().filter(|n| *n > 0)?;
    (!name.is_empty()).then_some((name, n))
}

impl ManifestPatch {
    /// Checks the fields and turns them into version tags. Field errors name the field.
    pub fn to_tags(&self) -> Result<Vec<KeyValue>, String> {
        let mut tags = Vec::new();
        if let Some(c) = &self.code_commit {
            if c.trim().is_empty() || c.len() > 250 {
                return Err("codeCommit: must be 1 to 250 characters".into());
            }
            tags.push(KeyValue::new(TAG_CODE_COMMIT, c.trim()));
        }
        for (field, tag, list) in [
            ("datasets", TAG_DATASETS, &self.datasets),
            ("features", TAG_FEATURES, &self.features),
            ("evalSets", TAG_EVAL_SETS, &self.eval_sets),
        ] {
            if let Some(list) = list {
                for (i, item) in list.iter().enumerate() {
                    if item.trim().is_empty() {
                        return Err(format!("{field}[{i}]: must not be empty"));
                    }
                    if field == "datasets"
                        && plinth_dataset_version(item).is_none()
                        && !item.contains(':')
                        && !item.starts_with('/')
                    {
                        return Err(format!(
                            "datasets[{i}]: {item:?} is neither a Plinth dataset version \
                             (NAME-vN) nor a URI (scheme://...) or absolute path"
                        ));
                    }
                }
                tags.push(KeyValue::new(tag, json_text(list)));
            }
        }
        for (tag, map) in [
            (TAG_PROMPTS, &self.prompts),
            (TAG_HYPERPARAMETERS, &self.hyperparameters),
        ] {
            if let Some(map) = map {
                tags.push(KeyValue::new(tag, json_text(map)));
            }
        }
        if let Some(m) = &self.eval_metrics {
            if let Some((k, v)) = m.iter().find(|(_, v)| !v.is_finite()) {
                return Err(format!("evalMetrics.{k}: {v} is not a finite number"));
            }
            tags.push(KeyValue::new(TAG_EVAL_METRICS, json_text(m)));
        }
        if let Some(d) = &self.deployment {
            tags.push(KeyValue::new(TAG_DEPLOYMENT, json_text(d)));
        }
        if let Some(t) = tags.iter().find(|t| t.value.len() > 8000) {
            return Err(format!(
                "{}: {} characters once encoded; a tag holds at most 8000",
                t.key,
                t.value.len()
            ));
        }
        Ok(tags)
    }

    pub fn is_empty(&self) -> bool {
        self == &ManifestPatch::default()
    }
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A list tag: a JSON array of strings, or comma-separated text.
fn parse_list(key: &str, text: &str, warnings: &mut Vec<String>) -> Vec<String> {
    let t = text.trim();
    if t.starts_with('[') {
        match serde_json::from_str::<Vec<Value>>(t) {
            Ok(items) => items.iter().map(value_text).collect(),
            Err(e) => {
                warnings.push(format!("tag {key}: not a JSON list: {e}"));
                Vec::new()
            }
        }
    } else {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn parse_map(key: &str, text: &str, warnings: &mut Vec<String>) -> BTreeMap<String, String> {
    match serde_json::from_str::<BTreeMap<String, Value>>(text) {
        Ok(m) => m.into_iter().map(|(k, v)| (k, value_text(&v))).collect(),
        Err(e) => {
            warnings.push(format!("tag {key}: not a JSON object: {e}"));
            BTreeMap::new()
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The manifest of a version: its own tags first, then its run's tags, params and metrics.
pub async fn manifest_of(store: &Store, mv: &ModelVersion) -> Manifest {
    let vtags: BTreeMap<&str, &str> = mv
        .tags
        .iter()
        .map(|t| (t.key.as_str(), t.value.as_str()))
        .collect();
    let run = if mv.run_id.is_empty() {
        None
    } else {
        store.get_run(&mv.run_id).await.ok()
    };
    let rtags: BTreeMap<&str, &str> = run
        .iter()
        .flat_map(|r| r.data.tags.iter())
        .map(|t| (t.key.as_str(), t.value.as_str()))
        .collect();
    let pick = |k: &str| vtags.get(k).or_else(|| rtags.get(k)).copied();
    let mut warnings = Vec::new();
    let mut m = Manifest {
        code_commit: pick(TAG_CODE_COMMIT)
            .or_else(|| rtags.get(GIT_COMMIT_TAG).copied())
            .map(str::to_string),
        ..Manifest::default()
    };
    for (tag, out) in [
        (TAG_DATASETS, &mut m.datasets),
        (TAG_FEATURES, &mut m.features),
        (TAG_EVAL_SETS, &mut m.eval_sets),
    ] {
        if let Some(t) = pick(tag) {
            *out = parse_list(tag, t, &mut warnings);
        }
    }
    if let Some(r) = &run {
        m.hyperparameters = r
            .data
            .params
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        m.eval_metrics = r
            .data
            .metrics
            .iter()
            .map(|x| (x.key.clone(), x.value))
            .collect();
    }
    for (tag, out) in [
        (TAG_PROMPTS, &mut m.prompts),
        (TAG_HYPERPARAMETERS, &mut m.hyperparameters),
        (TAG_DEPLOYMENT, &mut m.deployment),
    ] {
        if let Some(t) = pick(tag) {
            out.extend(parse_map(tag, t, &mut warnings));
        }
    }
    if let Some(t) = pick(TAG_EVAL_METRICS) {
        for (k, v) in parse_map(TAG_EVAL_METRICS, t, &mut warnings) {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() => {
                    m.eval_metrics.insert(k, x);
                }
                _ => warnings.push(format!(
                    "tag {TAG_EVAL_METRICS}: {k} = {v:?} is not a finite number"
                )),
            }
        }
    }
    m.warnings = warnings;
    m
}

/// One difference between two manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// `codeCommit`, `datasets`, `features`, `prompts`, `hyperparameters`, `evalSets`,
    /// `evalMetrics` or `deployment`.
    pub field: String,
    /// The entry of a map field (prompt, parameter, metric or setting name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// The value in the first version (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// The value in the second version (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
}

fn change(field: &str, key: Option<&str>, a: Option<String>, b: Option<String>) -> FieldChange {
    let kind = match (&a, &b) {
        (None, _) => "added",
        (_, None) => "removed",
        _ => "changed",
    };
    FieldChange {
        field: field.into(),
        key: key.map(str::to_string),
        change: kind.into(),
        a,
        b,
    }
}

fn diff_list(field: &str, a: &[String], b: &[String], out: &mut Vec<FieldChange>) {
    let (sa, sb): (BTreeSet<&String>, BTreeSet<&String>) = (a.iter().collect(), b.iter().collect());
    for x in sa.difference(&sb) {
        out.push(change(field, None, Some((*x).clone()), None));
    }
    for x in sb.difference(&sa) {
        out.push(change(field, None, None, Some((*x).clone())));
    }
}

fn diff_map<V: PartialEq + ToString>(
    field: &str,
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
    out: &mut Vec<FieldChange>,
) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(change(
                field,
                Some(k),
                x.map(ToString::to_string),
                y.map(ToString::to_string),
            ));
        }
    }
}

/// What changed from `a` to `b`, field by field, in field order.
pub fn diff(a: &Manifest, b: &Manifest) -> Vec<FieldChange> {
    let mut out = Vec::new();
    if a.code_commit != b.code_commit {
        out.push(change(
            "codeCommit",
            None,
            a.code_commit.clone(),
            b.code_commit.clone(),
        ));
    }
    diff_list("datasets", &a.datasets, &b.datasets, &mut out);
    diff_list("features", &a.features, &b.features, &mut out);
    diff_map("prompts", &a.prompts, &b.prompts, &mut out);
    diff_map(
        "hyperparameters",
        &a.hyperparameters,
        &b.hyperparameters,
        &mut out,
    );
    diff_list("evalSets", &a.eval_sets, &b.eval_sets, &mut out);
    diff_map("evalMetrics", &a.eval_metrics, &b.eval_metrics, &mut out);
    diff_map("deployment", &a.deployment, &b.deployment, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dataset_version_names_are_recognised() {
        for (text, want) in [
            ("flights-v3", Some(("flights", 3))),
            ("my-data-v12", Some(("my-data", 12))),
            ("flights-v0", None),
            ("flights", None),
            ("s3://b/flights-v3", None),
            ("-v2", None),
        ] {
            assert_eq!(plinth_dataset_version(text), want, "{text}");
        }
    }

    #[test]
    fn a_patch_is_checked_and_encoded_as_tags() {
        let p: ManifestPatch = serde_json::from_value(serde_json::json!({
            "codeCommit": "abc123", "datasets": ["flights-v1", "s3://b/x.csv"],
            "evalMetrics": {"auc": 0.9}, "deployment": {"replicas": 2, "gpu": "l4"}
        }))
        .unwrap();
        let tags = p.to_tags().unwrap();
        let get = |k: &str| tags.iter().find(|t| t.key == k).unwrap().value.clone();
        assert_eq!(get(TAG_CODE_COMMIT), "abc123");
        assert_eq!(get(TAG_DATASETS), r#"["flights-v1","s3://b/x.csv"]"#);
        assert_eq!(get(TAG_DEPLOYMENT), r#"{"gpu":"l4","replicas":2}"#);
        for (bad, field) in [
            (serde_json::json!({"datasets": ["flights"]}), "datasets[0]"),
            (serde_json::json!({"features": [""]}), "features[0]"),
            (serde_json::json!({"codeCommit": " "}), "codeCommit"),
        ] {
            let p: ManifestPatch = serde_json::from_value(bad).unwrap();
            let e = p.to_tags().unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
        assert!(
            serde_json::from_value::<ManifestPatch>(serde_json::json!({"dataset": []})).is_err()
        );
    }

    #[test]
    fn diff_lists_every_changed_field() {
        let a = Manifest {
            code_commit: Some("c1".into()),
            datasets: vec!["d-v1".into()],
            hyperparameters: [("lr".to_string(), "0.1".to_string())].into(),
            eval_metrics: [("auc".to_string(), 0.8)].into(),
            ..Manifest::default()
        };
        let b = Manifest {
            code_commit: Some("c2".into()),
            datasets: vec!["d-v2".into()],
            hyperparameters: [
                ("lr".to_string(), "0.1".to_string()),
                ("depth".to_string(), "4".to_string()),
            ]
            .into(),
            eval_metrics: [("auc".to_string(), 0.85)].into(),
            ..Manifest::default()
        };
        let d = diff(&a, &b);
        type Row = (
            String,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = d
            .into_iter()
            .map(|c| (c.field, c.key, c.change, c.a, c.b))
            .collect();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            rows,
            vec![
                (
                    "codeCommit".into(),
                    None,
                    "changed".into(),
                    s("c1"),
                    s("c2")
                ),
                ("datasets".into(), None, "removed".into(), s("d-v1"), None),
                ("datasets".into(), None, "added".into(), None, s("d-v2")),
                (
                    "hyperparameters".into(),
                    s("depth"),
                    "added".into(),
                    None,
                    s("4")
                ),
                (
                    "evalMetrics".into(),
                    s("auc"),
                    "changed".into(),
                    s("0.8"),
                    s("0.85")
                ),
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }
}
