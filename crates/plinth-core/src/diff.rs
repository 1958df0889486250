//! Field-by-field difference between two JSON documents, for `apply --dry-run` and audit details.

use plinth_types::api::FieldChange;
use serde_json::Value;

/// Every leaf that differs between `before` and `after`, with its dotted path. A missing
/// `before` (creation) lists every leaf of `after`.
pub fn diff_documents(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn walk(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                walk(&join(path, k), a.get(k), b.get(k), out);
            }
        }
        (None, Some(Value::Object(b))) if !b.is_empty() => {
            for (k, v) in b {
                walk(&join(path, k), None, Some(v), out);
            }
        }
        (Some(Value::Object(a)), None) if !a.is_empty() => {
            for (k, v) in a {
                walk(&join(path, k), Some(v), None, out);
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: path.to_string(),
            before: a.cloned(),
            after: b.cloned(),
        }),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(b: Option<Value>, a: Option<Value>) -> Vec<String> {
        diff_documents(b.as_ref(), a.as_ref())
            .into_iter()
            .map(|c| c.path)
            .collect()
    }

    #[test]
    fn reports_changed_added_and_removed_leaves() {
        let before = json!({"spec": {"nodes": 1, "region": "eu", "quotas": [1]}});
        let after = json!({"spec": {"nodes": 2, "cpus": 4, "quotas": [1]}});
        assert_eq!(
            paths(Some(before), Some(after)),
            vec!["spec.cpus", "spec.nodes", "spec.region"]
        );
    }

    #[test]
    fn creation_lists_every_leaf_and_equal_documents_nothing() {
        let doc = json!({"metadata": {"name": "a"}, "spec": {"x": [1, 2]}});
        assert_eq!(
            paths(None, Some(doc.clone())),
            vec!["metadata.name", "spec.x"]
        );
        assert!(paths(Some(doc.clone()), Some(doc)).is_empty());
    }
}
