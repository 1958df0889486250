//! The registry of resource kinds and the validation of one document against it. A later kind
//! plugs in by adding one `KindInfo` entry with its validate function.

use plinth_types::api::SourcedDocument;
use plinth_types::spec::{PoolSpec, QueueSpec, TeamSpec};
use plinth_types::{API_VERSION, Document, ObjectMeta};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::documents::DocumentError;

/// Who owns objects of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Shared by the whole installation; changed by admins only (Pool, Team).
    Cluster,
    /// Owned by one team, named by the document (Queue's `spec.team`).
    Team,
}

/// A name one object uses that must exist (in the store or in the same apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: &'static str,
    pub name: String,
    /// Field path of the reference, for the error message.
    pub path: String,
}

/// A document that passed validation, normalized (defaults explicit).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidObject {
    pub kind: &'static str,
    pub name: String,
    /// Owning team (`None` for cluster-scoped kinds other than Team itself).
    pub team: Option<String>,
    pub document: Document,
    pub references: Vec<Reference>,
    pub file: String,
    pub index: Option<usize>,
}

impl ValidObject {
    /// An error located at this object's document.
    pub fn error(&self, path: &str, message: impl Into<String>) -> DocumentError {
        DocumentError {
            file: self.file.clone(),
            index: self.index,
            object: Some(format!("{}/{}", self.kind, self.name)),
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// What a kind's validator returns besides the normalized spec.
pub struct Checked {
    pub spec: serde_json::Value,
    pub team: Option<String>,
    pub references: Vec<Reference>,
}

/// A field-level problem inside `spec`.
pub struct FieldError {
    pub path: String,
    pub message: String,
}

type Validator = fn(&str, serde_json::Value) -> Result<Checked, FieldError>;

/// One resource kind.
pub struct KindInfo {
    pub name: &'static str,
    pub plural: &'static str,
    pub aliases: &'static [&'static str],
    pub scope: Scope,
    pub description: &'static str,
    validate: Validator,
}

impl std::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindInfo")
            .field("name", &self.name)
            .finish()
    }
}

/// Every kind this release knows, in the order they should be applied (referenced kinds first).
pub static KINDS: &[KindInfo] = &[
    KindInfo {
        name: "Pool",
        plural: "pools",
        aliases: &["pool"],
        scope: Scope::Cluster,
        description: "a group of identical nodes with a backend, accelerators and a price",
        validate: validate_pool,
    },
    KindInfo {
        name: "Team",
        plural: "teams",
        aliases: &["team"],
        scope: Scope::Cluster,
        description: "a tenant that owns queues, jobs, models and spend",
        validate: validate_team,
    },
    KindInfo {
        name: "Queue",
        plural: "queues",
        aliases: &["queue", "q"],
        scope: Scope::Team,
        description: "a team's quota of pools, its cohort, priority and preemption policy",
        validate: validate_queue,
    },
    KindInfo {
        name: "DataContract",
        plural: "datacontracts",
        aliases: &["datacontract", "contract", "contracts", "dc"],
        scope: Scope::Cluster,
        description: "an ODCS v3 data contract that registered dataset versions are checked against",
        validate: validate_data_contract,
    },
];

/// The kind of server-managed dataset versions (`POST /api/v1/datacontracts/{name}/versions`);
/// stored like a resource but never applied by hand.
pub const DATASET_VERSION_KIND: &str = "DatasetVersion";

/// The kind of server-managed dataset profiles: one per dataset version, same name
/// (`<contract>-v<n>`), stored apart so listing versions does not load every profile.
pub const DATASET_PROFILE_KIND: &str = "DatasetProfile";

/// The kind of server-managed drift references: one per DataContract, named like it
/// (`POST /api/v1/datacontracts/{name}/reference`).
pub const DATASET_REFERENCE_KIND: &str = "DatasetReference";

/// The kind of jobs: team-scoped, submitted with `plinth job submit` (`POST /api/v1/jobs`), run
/// by the server's job controller, which records their status in the same object.
pub const JOB_KIND: &str = "Job";

/// Kinds the server manages itself; applying a document of one of them is an error.
pub const SERVER_MANAGED_KINDS: &[&str] = &[
    JOB_KIND,
    DATASET_VERSION_KIND,
    DATASET_PROFILE_KIND,
    DATASET_REFERENCE_KIND,
];

/// Finds a kind by its name, plural or alias, ignoring case.
pub fn lookup_kind(s: &str) -> Option<&'static KindInfo> {
    let l = s.to_ascii_lowercase();
    KINDS.iter().find(|k| {
        k.name.to_ascii_lowercase() == l || k.plural == l || k.aliases.contains(&l.as_str())
    })
}

/// The position of a kind in `KINDS`, used to apply referenced kinds first.
pub fn kind_order(kind: &str) -> usize {
    KINDS
        .iter()
        .position(|k| k.name == kind)
        .unwrap_or(KINDS.len())
}

fn known_kinds() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Checks an object name: 1 to 63 lowercase letters, digits or `-`, starting with a letter and
/// not ending with `-`. Such names are safe in URLs, file paths and SQL identifiers.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 63 {
        return Err(format!("name {name:?} must be 1 to 63 characters long"));
    }
    if !ok_chars || !name.as_bytes()[0].is_ascii_lowercase() || name.ends_with('-') {
        return Err(format!(
            "name {name:?} is invalid: use lowercase letters, digits and '-', starting with a letter and not ending with '-'"
        ));
    }
    Ok(())
}

fn validate_label(key: &str, value: &str) -> Result<(), String> {
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if !key_ok {
        return Err(format!(
            "label key {key:?} is invalid: use 1 to 253 letters, digits, '-', '_', '.' or '/'"
        ));
    }
    let value_ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !value_ok {
        return Err(format!(
            "label {key:?} has invalid value {value:?}: use at most 63 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Validates one document: envelope, metadata and the kind's spec.
pub fn validate_document(sd: &SourcedDocument) -> Result<ValidObject, DocumentError> {
    let file = sd.file.clone().unwrap_or_else(|| "request".to_string());
    let err = |object: Option<String>, path: &str, message: String| DocumentError {
        file: file.clone(),
        index: sd.index,
        object,
        path: path.to_string(),
        message,
    };
    let serde_json::Value::Object(map) = &sd.document else {
        return Err(err(
            None,
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    if let Some(kind) = map
        .get("kind")
        .and_then(|k| k.as_str())
        .filter(|k| SERVER_MANAGED_KINDS.contains(k))
    {
        if kind == JOB_KIND {
            return Err(err(
                None,
                "kind",
                "Job documents go to the server's job controller, which checks them with the scheduler: apply them through the server (`plinth apply`, `plinth job submit -f FILE`, POST /api/v1/jobs)".into(),
            ));
        }
        return Err(err(
            None,
            "kind",
            format!(
                "{kind} objects are managed by the server and cannot be applied; register a dataset with `plinth dataset register CONTRACT PATH` (POST /api/v1/datacontracts/{{name}}/versions) and set the drift reference with `plinth dataset reference CONTRACT VERSION`"
            ),
        ));
    }
    // A raw ODCS v3 document: wrap it into the Plinth envelope, named by its `id`.
    if let Some(serde_json::Value::String(v)) = map.get("apiVersion")
        && v.starts_with("v3.")
        && map.get("kind").and_then(|k| k.as_str()) == Some("DataContract")
    {
        let id = match map.get("id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            Some(_) => return Err(err(None, "id", "must be a string".into())),
            None => {
                return Err(err(
                    None,
                    "id",
                    "missing; a raw ODCS data contract is stored under its `id`".into(),
                ));
            }
        };
        validate_name(&id).map_err(|m| {
            err(
                Some(format!("DataContract/{id}")),
                "id",
                format!("the contract id names the DataContract object: {m}"),
            )
        })?;
        let wrapped = SourcedDocument {
            file: sd.file.clone(),
            index: sd.index,
            document: serde_json::json!({
                "apiVersion": API_VERSION,
                "kind": "DataContract",
                "metadata": {"name": id},
                "spec": sd.document.clone(),
            }),
        };
        return validate_document(&wrapped);
    }
    for key in map.keys() {
        if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
            return Err(err(
                None,
                key,
                "unknown field; a document has apiVersion, kind, metadata and spec".into(),
            ));
        }
    }
    match map.get("apiVersion") {
        Some(serde_json::Value::String(v)) if v == API_VERSION => {}
        Some(serde_json::Value::String(v)) => {
            return Err(err(
                None,
                "apiVersion",
                format!("unsupported apiVersion {v:?}; expected {API_VERSION:?}"),
            ));
        }
        Some(_) => return Err(err(None, "apiVersion", "must be a string".into())),
        None => {
            return Err(err(
                None,
                "apiVersion",
                format!("missing; expected {API_VERSION:?}"),
            ));
        }
    }
    let kind = match map.get("kind") {
        Some(serde_json::Value::String(k)) => {
            KINDS.iter().find(|i| i.name == k).ok_or_else(|| {
                err(
                    None,
                    "kind",
                    format!("unknown kind {k:?}; known kinds: {}", known_kinds()),
                )
            })?
        }
        Some(_) => return Err(err(None, "kind", "must be a string".into())),
        None => {
            return Err(err(
                None,
                "kind",
                format!("missing; known kinds: {}", known_kinds()),
            ));
        }
    };
    let metadata_value = map.get("metadata").cloned().ok_or_else(|| {
        err(
            None,
            "metadata",
            "missing; metadata.name is required".into(),
        )
    })?;
    let metadata: ObjectMeta =
        typed(metadata_value).map_err(|e| err(None, &join_path("metadata", &e.path), e.message))?;
    let object = Some(format!("{}/{}", kind.name, metadata.name));
    validate_name(&metadata.name).map_err(|m| err(object.clone(), "metadata.name", m))?;
    for (k, v) in &metadata.labels {
        validate_label(k, v).map_err(|m| err(object.clone(), "metadata.labels", m))?;
    }
    let spec = map
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Object(Default::default()));
    let checked = (kind.validate)(&metadata.name, spec)
        .map_err(|e| err(object.clone(), &join_path("spec", &e.path), e.message))?;
    Ok(ValidObject {
        kind: kind.name,
        name: metadata.name.clone(),
        team: checked.team,
        document: Document {
            api_version: API_VERSION.to_string(),
            kind: kind.name.to_string(),
            metadata,
            spec: checked.spec,
        },
        references: checked.references,
        file,
        index: sd.index,
    })
}

fn join_path(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

/// Deserializes with the failing field's path.
fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FieldError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

fn normalized<T: Serialize>(spec: &T) -> Result<serde_json::Value, FieldError> {
    serde_json::to_value(spec).map_err(|e| FieldError {
        path: String::new(),
        message: format!("cannot normalize: {e}"),
    })
}

fn field(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

fn check_amount(path: &str, v: f64) -> Result<(), FieldError> {
    if !v.is_finite() || v < 0.0 {
        return Err(field(
            path,
            format!("must be a finite number >= 0, got {v}"),
        ));
    }
    Ok(())
}

fn validate_pool(_name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let s: PoolSpec = typed(spec)?;
    if s.nodes == 0 {
        return Err(field("nodes", "must be at least 1"));
    }
    if s.cpus_per_node == 0 {
        return Err(field("cpusPerNode", "must be at least 1"));
    }
    if s.memory_gib_per_node == 0 {
        return Err(field("memoryGibPerNode", "must be at least 1"));
    }
    if let Some(a) = &s.accelerator {
        if a.count == 0 {
            return Err(field("accelerator.count", "must be at least 1"));
        }
        if a.kind.trim().is_empty() {
            return Err(field("accelerator.type", "must not be empty"));
        }
    }
    if let Some(p) = s.price_per_gpu_hour {
        check_amount("pricePerGpuHour", p)?;
        if s.accelerator.is_none() {
            return Err(field(
                "pricePerGpuHour",
                "set on a pool without accelerators; use pricePerNodeHour",
            ));
        }
    }
    if let Some(p) = s.price_per_node_hour {
        check_amount("pricePerNodeHour", p)?;
    }
    if s.currency.len() != 3 || !s.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(field(
            "currency",
            format!(
                "{:?} is not an ISO 4217 code such as USD or EUR",
                s.currency
            ),
        ));
    }
    if let Some(r) = &s.region {
        validate_label("region", r).map_err(|m| field("region", m))?;
    }
    Ok(Checked {
        spec: normalized(&s)?,
        team: None,
        references: Vec::new(),
    })
}

fn validate_team(name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let s: TeamSpec = typed(spec)?;
    for (i, o) in s.owners.iter().enumerate() {
        if o.trim().is_empty() {
            return Err(field(format!("owners[{i}]"), "must not be empty"));
        }
    }
    Ok(Checked {
        spec: normalized(&s)?,
        team: Some(name.to_string()),
        references: Vec::new(),
    })
}

fn validate_queue(_name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let s: QueueSpec = typed(spec)?;
    validate_name(&s.team).map_err(|m| field("team", m))?;
    if let Some(c) = &s.cohort {
        validate_name(c).map_err(|m| field("cohort", m))?;
    }
    if !(-1000..=1000).contains(&s.priority) {
        return Err(field(
            "priority",
            format!("must be between -1000 and 1000, got {}", s.priority),
        ));
    }
    let mut references = vec![Reference {
        kind: "Team",
        name: s.team.clone(),
        path: "spec.team".into(),
    }];
    let mut seen = std::collections::BTreeSet::new();
    for (i, q) in s.quotas.iter().enumerate() {
        let p = format!("quotas[{i}]");
        validate_name(&q.pool).map_err(|m| field(format!("{p}.pool"), m))?;
        if !seen.insert(q.pool.clone()) {
            return Err(field(
                format!("{p}.pool"),
                format!("pool {:?} appears twice", q.pool),
            ));
        }
        check_amount(&format!("{p}.gpus"), q.gpus)?;
        if let Some(b) = q.borrowing_limit {
            check_amount(&format!("{p}.borrowingLimit"), b)?;
        }
        if let Some(l) = q.lending_limit {
            check_amount(&format!("{p}.lendingLimit"), l)?;
            if l > q.gpus {
                return Err(field(
                    format!("{p}.lendingLimit"),
                    format!("{l} is more than the nominal {} gpus", q.gpus),
                ));
            }
        }
        if (q.borrowing_limit.is_some() || q.lending_limit.is_some()) && s.cohort.is_none() {
            return Err(field(
                p.clone(),
                "borrowing and lending limits need a cohort",
            ));
        }
        references.push(Reference {
            kind: "Pool",
            name: q.pool.clone(),
            path: format!("spec.{p}.pool"),
        });
    }
    Ok(Checked {
        spec: normalized(&s)?,
        team: Some(s.team.clone()),
        references,
    })
}

fn validate_data_contract(_name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let contract =
        plinth_contracts::odcs::Contract::from_value(spec.clone()).map_err(|e| FieldError {
            path: e.path,
            message: e.message,
        })?;
    let errors: Vec<_> = plinth_contracts::odcs::lint(&contract)
        .into_iter()
        .filter(|f| f.level == plinth_contracts::odcs::Level::Error)
        .collect();
    if let Some(first) = errors.first() {
        let more = if errors.len() > 1 {
            format!(" (and {} more lint errors)", errors.len() - 1)
        } else {
            String::new()
        };
        return Err(field(
            first.path.clone(),
            format!("{}{more}", first.message),
        ));
    }
    // Stored exactly as given, not re-serialized from the typed structs.
    Ok(Checked {
        spec,
        team: None,
        references: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(doc: serde_json::Value) -> Result<ValidObject, String> {
        let sd = SourcedDocument {
            file: Some("f.yaml".into()),
            index: Some(2),
            document: doc,
        };
        validate_document(&sd).map_err(|e| e.to_string())
    }

    fn pool(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "plinth/v1", "kind": "Pool", "metadata": {"name": "gpu"}, "spec": spec})
    }

    #[test]
    fn valid_pool_is_normalized_with_defaults() {
        let v = check(pool(
            json!({"nodes": 2, "cpusPerNode": 8, "memoryGibPerNode": 32}),
        ))
        .unwrap();
        assert_eq!(v.kind, "Pool");
        assert_eq!(v.team, None);
        assert_eq!(v.document.spec["backend"], "local");
        assert_eq!(v.document.spec["procurement"], "on_demand");
        assert_eq!(v.document.spec["currency"], "USD");
    }

    #[test]
    fn errors_name_file_document_object_and_path() {
        let cases = [
            (
                pool(json!({"nodes": "two", "cpusPerNode": 8, "memoryGibPerNode": 32})),
                "f.yaml: document 2 (Pool/gpu): spec.nodes: invalid type: string \"two\", expected u32",
            ),
            (
                pool(json!({"nodes": 0, "cpusPerNode": 8, "memoryGibPerNode": 32})),
                "f.yaml: document 2 (Pool/gpu): spec.nodes: must be at least 1",
            ),
            (
                pool(json!({"nodes": 1, "cpusPerNode": 8, "memoryGibPerNode": 32, "colour": 1})),
                "f.yaml: document 2 (Pool/gpu): spec.colour: unknown field `colour`, expected one of",
            ),
            (
                json!({"apiVersion": "plinth/v2", "kind": "Pool", "metadata": {"name": "x"}}),
                "f.yaml: document 2: apiVersion: unsupported apiVersion \"plinth/v2\"",
            ),
            (
                json!({"apiVersion": "plinth/v1", "kind": "Gadget", "metadata": {"name": "x"}}),
                "f.yaml: document 2: kind: unknown kind \"Gadget\"; known kinds: Pool, Team, Queue",
            ),
            (
                json!({"apiVersion": "plinth/v1", "kind": "Team", "metadata": {"name": "x'; drop table"}}),
                "f.yaml: document 2 (Team/x'; drop table): metadata.name: name \"x'; drop table\" is invalid",
            ),
            (
                json!({"apiVersion": "plinth/v1", "kind": "Team", "metadata": {"name": "../etc"}}),
                "metadata.name: name \"../etc\" is invalid",
            ),
            (
                json!({"apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": "q"},
                    "spec": {"team": "a", "quotas": [{"pool": "p", "gpus": 2, "lendingLimit": 3}]}}),
                "f.yaml: document 2 (Queue/q): spec.quotas[0].lendingLimit: 3 is more than the nominal 2 gpus",
            ),
            (
                json!({"apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": "q"},
                    "spec": {"team": "a", "quotas": [{"pool": "p", "gpus": -1}]}}),
                "spec.quotas[0].gpus: must be a finite number >= 0, got -1",
            ),
            (
                json!({"apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": "q"}, "spec": {}}),
                "f.yaml: document 2 (Queue/q): spec: missing field `team`",
            ),
            (
                json!(["not", "a", "mapping"]),
                "f.yaml: document 2: a document must be a mapping",
            ),
        ];
        for (doc, expected) in cases {
            let got = check(doc.clone()).expect_err(&format!("{doc} should be rejected"));
            assert!(
                got.contains(expected),
                "for {doc}\n  got:      {got}\n  expected: {expected}"
            );
        }
    }

    #[test]
    fn queue_references_its_team_and_pools() {
        let v = check(json!({"apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": "q"},
            "spec": {"team": "research", "cohort": "all", "quotas": [{"pool": "a", "gpus": 4}, {"pool": "b", "gpus": 0.5}]}}))
        .unwrap();
        assert_eq!(v.team.as_deref(), Some("research"));
        let refs: Vec<_> = v
            .references
            .iter()
            .map(|r| (r.kind, r.name.as_str(), r.path.as_str()))
            .collect();
        assert_eq!(
            refs,
            vec![
                ("Team", "research", "spec.team"),
                ("Pool", "a", "spec.quotas[0].pool"),
                ("Pool", "b", "spec.quotas[1].pool")
            ]
        );
    }

    #[test]
    fn lookup_accepts_plural_alias_and_case() {
        for s in ["Pool", "pools", "POOL", "pool"] {
            assert_eq!(lookup_kind(s).map(|k| k.name), Some("Pool"));
        }
        assert_eq!(lookup_kind("q").map(|k| k.name), Some("Queue"));
        assert!(lookup_kind("widgets").is_none());
    }

    fn odcs(id: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v3.0.2", "kind": "DataContract", "id": id, "version": "1.0.0",
            "status": "active",
            "schema": [{"name": "orders", "properties": [
                {"name": "id", "logicalType": "integer", "required": true, "unique": true}]}]
        })
    }

    #[test]
    fn data_contract_envelope_keeps_the_odcs_document_as_given() {
        let v = check(json!({"apiVersion": "plinth/v1", "kind": "DataContract",
            "metadata": {"name": "orders"}, "spec": odcs("anything-else")}))
        .unwrap();
        assert_eq!(v.kind, "DataContract");
        assert_eq!(v.name, "orders");
        assert_eq!(v.team, None);
        assert_eq!(v.document.spec, odcs("anything-else"));
    }

    #[test]
    fn raw_odcs_document_is_wrapped_and_named_by_its_id() {
        let v = check(odcs("orders-v1")).unwrap();
        assert_eq!(v.kind, "DataContract");
        assert_eq!(v.name, "orders-v1");
        assert_eq!(v.document.api_version, "plinth/v1");
        assert_eq!(v.document.metadata.name, "orders-v1");
        assert_eq!(v.document.spec, odcs("orders-v1"));
        assert_eq!(
            lookup_kind("datacontracts").map(|k| k.name),
            Some("DataContract")
        );
    }

    #[test]
    fn invalid_data_contracts_are_rejected_with_their_path() {
        let err = check(odcs("Not A Name")).unwrap_err();
        assert!(
            err.contains("f.yaml: document 2 (DataContract/Not A Name): id: "),
            "{err}"
        );
        let mut bad = odcs("orders");
        bad["schema"][0]["properties"][0]["logicalType"] = json!("integr");
        let err = check(bad).unwrap_err();
        assert!(
            err.contains("(DataContract/orders): spec.schema[0].properties[0].logicalType"),
            "{err}"
        );
        let mut lint = odcs("orders");
        lint["schema"][0]["properties"][0]["logicalTypeOptions"] = json!({"pattern": "(["});
        let err = check(lint).unwrap_err();
        assert!(
            err.contains("(DataContract/orders): spec.schema[0].properties[0]"),
            "{err}"
        );
        let err = check(json!({"apiVersion": "plinth/v1", "kind": "DatasetVersion",
            "metadata": {"name": "orders-v1"}, "spec": {}}))
        .unwrap_err();
        assert!(err.contains("managed by the server"), "{err}");
        for kind in ["DatasetProfile", "DatasetReference"] {
            let err = check(json!({"apiVersion": "plinth/v1", "kind": kind,
                "metadata": {"name": "orders"}, "spec": {}}))
            .unwrap_err();
            assert!(
                err.contains(&format!("{kind} objects are managed by the server")),
                "{err}"
            );
        }
    }
}
