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
    KindInfo {
        name: BUDGET_KIND,
        plural: "budgets",
        aliases: &["budget"],
        scope: Scope::Cluster,
        description: "a spending limit over tagged spend per period, with thresholds that notify, require approval or block non-production work",
        validate: validate_budget,
    },
    KindInfo {
        name: GPU_QUOTA_KIND,
        plural: "gpuquotas",
        aliases: &["gpuquota", "quota", "quotas"],
        scope: Scope::Cluster,
        description: "a team's GPU-hours per calendar month, enforced when jobs are admitted",
        validate: validate_gpu_quota,
    },
    KindInfo {
        name: DEPLOYMENT_KIND,
        plural: "deployments",
        aliases: &["deployment", "deploy"],
        scope: Scope::Team,
        description: "model versions behind the inference gateway: traffic split, upstreams, cache, limits, canary policy",
        validate: validate_deployment,
    },
    KindInfo {
        name: RELEASE_POLICY_KIND,
        plural: "releasepolicies",
        aliases: &["releasepolicy", "rp"],
        scope: Scope::Cluster,
        description: "the gates a model version must pass to be promoted (per model, or the default)",
        validate: validate_release_policy,
    },
    KindInfo {
        name: RETRAIN_POLICY_KIND,
        plural: "retrainpolicies",
        aliases: &["retrainpolicy"],
        scope: Scope::Team,
        description: "submits a training job from a template on a schedule or when a new dataset version passes its contract",
        validate: validate_retrain_policy,
    },
];

/// The kind of release policies ([`ReleasePolicySpec`]).
pub const RELEASE_POLICY_KIND: &str = "ReleasePolicy";

/// The kind of server-managed model lifecycle records: one per registered model (named like
/// it) holding its staging/canary/production versions, production history, approvals and
/// deprecations.
pub const MODEL_LIFECYCLE_KIND: &str = "ModelLifecycle";

/// The kind of retraining policies ([`RetrainPolicySpec`]).
pub const RETRAIN_POLICY_KIND: &str = "RetrainPolicy";

/// The kind of server-managed retraining state: one per RetrainPolicy, same name.
pub const RETRAIN_STATUS_KIND: &str = "RetrainStatus";

/// `spec` of a RetrainPolicy: the training job to submit, and when.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrainPolicySpec {
    /// The registered model the job retrains (recorded on the job's tags).
    pub model: String,
    /// The job to submit, as `plinth job submit` takes it; its team owns the policy.
    pub job: plinth_types::job::JobSpec,
    /// Submit every this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_seconds: Option<u64>,
    /// Submit when a new version of this DataContract's dataset passes its contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dataset: Option<String>,
    /// Submit when a new version of this DataContract's dataset drifts from the contract's
    /// drift reference (the verdict of `plinth dataset drift`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_drift: Option<String>,
    /// Submit when the inference gateway rolls back the canary of this Deployment (its error
    /// rate or p95 latency broke the deployment's canary policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_canary_rollback: Option<String>,
}

/// Promotion targets, in order.
pub const PROMOTION_TARGETS: [&str; 3] = ["staging", "canary", "production"];

/// `spec` of a ReleasePolicy: what a model version must meet to be promoted.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleasePolicySpec {
    /// The registered model this policy gates; absent: the default for every model without
    /// a policy of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The promotion targets gated (`staging`, `canary`, `production`); default all three.
    #[serde(default = "all_targets")]
    pub stages: Vec<String>,
    /// Conditions on the version's eval metrics.
    #[serde(default)]
    pub metrics: Vec<MetricGate>,
    /// The most the latency metric may be, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_budget_ms: Option<f64>,
    #[serde(default = "default_latency_metric")]
    pub latency_metric: String,
    /// The most 1,000 inferences may cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_1k_budget: Option<f64>,
    #[serde(default = "default_cost_metric")]
    pub cost_metric: String,
    /// Every Plinth dataset version the model was trained on must have passed its contract.
    #[serde(default)]
    pub require_contract_passed: bool,
    /// Approvals needed from maintainers (or admins) other than the version's author.
    #[serde(default)]
    pub approvals: u32,
    /// The targets the approvals are needed for (default: every gated target), e.g.
    /// `[production]` so staging passes on metrics alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approval_stages: Vec<String>,
}

/// One eval-metric condition: absolute bounds and/or bounds on the difference to the current
/// production version (`candidate - production`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricGate {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delta_vs_production: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delta_vs_production: Option<f64>,
}

fn all_targets() -> Vec<String> {
    PROMOTION_TARGETS.iter().map(|s| s.to_string()).collect()
}

fn default_latency_metric() -> String {
    "latency_p95_ms".into()
}

fn default_cost_metric() -> String {
    "cost_per_1k_inferences".into()
}

/// The kind of inference deployments served by the gateway (`plinth-gateway`'s spec plus the
/// owning `team`; the name is `metadata.name`).
pub const DEPLOYMENT_KIND: &str = "Deployment";

/// The kind of server-managed deployment status (canary rollbacks): one per Deployment, same
/// name, written by the server's gateway.
pub const DEPLOYMENT_STATUS_KIND: &str = "DeploymentStatus";

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
    MODEL_LIFECYCLE_KIND,
    RETRAIN_STATUS_KIND,
    DATASET_VERSION_KIND,
    DATASET_PROFILE_KIND,
    DATASET_REFERENCE_KIND,
    DEPLOYMENT_STATUS_KIND,
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
        if kind == DEPLOYMENT_STATUS_KIND {
            return Err(err(
                None,
                "kind",
                "DeploymentStatus objects are written by the server's gateway (canary rollbacks) and cannot be applied; apply the Deployment instead".into(),
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
    if let Some(t) = &s.priced_since {
        plinth_cost::parse_priced_since(t).map_err(|m| field("pricedSince", m))?;
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

/// The kind of budgets ([`plinth_cost::BudgetSpec`]).
pub const BUDGET_KIND: &str = "Budget";

/// The kind of monthly GPU-hour quotas ([`plinth_cost::GpuQuotaSpec`]).
pub const GPU_QUOTA_KIND: &str = "GpuQuota";

fn validate_gpu_quota(_name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let s: plinth_cost::GpuQuotaSpec = typed(spec)?;
    validate_name(&s.team).map_err(|m| field("team", m))?;
    s.validate()
        .map_err(|e| field("gpuHoursPerMonth", e.to_string()))?;
    Ok(Checked {
        spec: normalized(&s)?,
        team: None,
        references: vec![Reference {
            kind: "Team",
            name: s.team.clone(),
            path: "spec.team".into(),
        }],
    })
}

fn validate_budget(name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let s: plinth_cost::BudgetSpec = typed(spec)?;
    if let Err(e) = s.validate(name) {
        // The cost engine names the budget and the field; the path points at the field.
        let msg = e.to_string();
        let path = if msg.contains("threshold") {
            "thresholds"
        } else if msg.contains("scope") {
            "scope"
        } else if msg.contains("currency") {
            "currency"
        } else if msg.contains("approvalOver") {
            "approvalOver"
        } else if msg.contains("webhook") {
            "webhook"
        } else {
            "amount"
        };
        return Err(field(path, msg));
    }
    Ok(Checked {
        spec: normalized(&s)?,
        team: None,
        references: Vec::new(),
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

/// A Deployment's spec is the gateway's `DeploymentSpec` without `name` (that is
/// `metadata.name`) plus the owning `team`; the gateway's own checks name the field.
fn validate_deployment(name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let serde_json::Value::Object(mut map) = spec else {
        return Err(field("", "must be a mapping"));
    };
    if map.contains_key("name") {
        return Err(field(
            "name",
            "not allowed: a deployment is named by metadata.name",
        ));
    }
    let team = match map.remove("team") {
        Some(serde_json::Value::String(t)) => t,
        Some(_) => return Err(field("team", "must be a string")),
        None => return Err(field("team", "missing: the team that owns this deployment")),
    };
    validate_name(&team).map_err(|m| field("team", m))?;
    map.insert("name".into(), serde_json::Value::String(name.to_string()));
    let s: plinth_gateway::DeploymentSpec = typed(serde_json::Value::Object(map))?;
    s.validate("spec").map_err(|e| FieldError {
        path: e
            .field
            .strip_prefix("spec.")
            .unwrap_or(&e.field)
            .to_string(),
        message: e.message,
    })?;
    let mut references = vec![Reference {
        kind: "Team",
        name: team.clone(),
        path: "spec.team".into(),
    }];
    for (i, f) in s.fallbacks.iter().enumerate() {
        if f == name {
            return Err(field(
                format!("fallbacks[{i}]"),
                "a deployment cannot fall back to itself",
            ));
        }
        references.push(Reference {
            kind: DEPLOYMENT_KIND,
            name: f.clone(),
            path: format!("spec.fallbacks[{i}]"),
        });
    }
    let mut spec = normalized(&s)?;
    if let serde_json::Value::Object(m) = &mut spec {
        m.remove("name");
        m.insert("team".into(), serde_json::Value::String(team.clone()));
    }
    Ok(Checked {
        spec,
        team: Some(team),
        references,
    })
}

fn validate_retrain_policy(_name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let s: RetrainPolicySpec = typed(spec)?;
    if s.model.trim().is_empty() {
        return Err(field("model", "must not be empty"));
    }
    if s.every_seconds.is_none()
        && s.on_dataset.is_none()
        && s.on_drift.is_none()
        && s.on_canary_rollback.is_none()
    {
        return Err(field(
            "",
            "needs a trigger: everySeconds, onDataset, onDrift and/or onCanaryRollback",
        ));
    }
    if s.every_seconds == Some(0) {
        return Err(field("everySeconds", "must be at least 1"));
    }
    if s.job.command.is_empty() {
        return Err(field("job.command", "must hold at least the program"));
    }
    validate_name(&s.job.team).map_err(|m| field("job.team", m))?;
    validate_name(&s.job.queue).map_err(|m| field("job.queue", m))?;
    let mut references = vec![
        Reference {
            kind: "Team",
            name: s.job.team.clone(),
            path: "spec.job.team".into(),
        },
        Reference {
            kind: "Queue",
            name: s.job.queue.clone(),
            path: "spec.job.queue".into(),
        },
    ];
    if let Some(d) = &s.on_dataset {
        validate_name(d).map_err(|m| field("onDataset", m))?;
        references.push(Reference {
            kind: "DataContract",
            name: d.clone(),
            path: "spec.onDataset".into(),
        });
    }
    if let Some(d) = &s.on_drift {
        validate_name(d).map_err(|m| field("onDrift", m))?;
        references.push(Reference {
            kind: "DataContract",
            name: d.clone(),
            path: "spec.onDrift".into(),
        });
    }
    if let Some(d) = &s.on_canary_rollback {
        validate_name(d).map_err(|m| field("onCanaryRollback", m))?;
        references.push(Reference {
            kind: DEPLOYMENT_KIND,
            name: d.clone(),
            path: "spec.onCanaryRollback".into(),
        });
    }
    Ok(Checked {
        spec: normalized(&s)?,
        team: Some(s.job.team.clone()),
        references,
    })
}

fn validate_release_policy(_name: &str, spec: serde_json::Value) -> Result<Checked, FieldError> {
    let s: ReleasePolicySpec = typed(spec)?;
    if let Some(m) = &s.model
        && m.trim().is_empty()
    {
        return Err(field(
            "model",
            "must not be empty; leave it out for the default policy",
        ));
    }
    for (i, st) in s.stages.iter().enumerate() {
        if !PROMOTION_TARGETS.contains(&st.as_str()) {
            return Err(field(
                format!("stages[{i}]"),
                format!("{st:?} is not one of staging, canary, production"),
            ));
        }
    }
    for (i, st) in s.approval_stages.iter().enumerate() {
        if !s.stages.contains(st) {
            return Err(field(
                format!("approvalStages[{i}]"),
                format!(
                    "{st:?} is not one of the gated stages ({})",
                    s.stages.join(", ")
                ),
            ));
        }
    }
    for (i, g) in s.metrics.iter().enumerate() {
        let p = format!("metrics[{i}]");
        if g.metric.trim().is_empty() {
            return Err(field(format!("{p}.metric"), "must not be empty"));
        }
        let bounds = [
            ("min", g.min),
            ("max", g.max),
            ("minDeltaVsProduction", g.min_delta_vs_production),
            ("maxDeltaVsProduction", g.max_delta_vs_production),
        ];
        if bounds.iter().all(|(_, v)| v.is_none()) {
            return Err(field(
                p,
                "needs at least one of min, max, minDeltaVsProduction, maxDeltaVsProduction",
            ));
        }
        for (k, v) in bounds {
            if let Some(v) = v
                && !v.is_finite()
            {
                return Err(field(
                    format!("{p}.{k}"),
                    format!("must be a finite number, got {v}"),
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (g.min, g.max)
            && lo > hi
        {
            return Err(field(format!("{p}.min"), format!("{lo} is above max {hi}")));
        }
    }
    if let Some(b) = s.latency_budget_ms {
        check_amount("latencyBudgetMs", b)?;
    }
    if let Some(b) = s.cost_per_1k_budget {
        check_amount("costPer1kBudget", b)?;
    }
    if s.approvals > 10 {
        return Err(field(
            "approvals",
            format!("{} is more than 10", s.approvals),
        ));
    }
    Ok(Checked {
        spec: normalized(&s)?,
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

    fn deployment(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "plinth/v1", "kind": "Deployment", "metadata": {"name": "chat"}, "spec": spec})
    }

    fn deployment_spec() -> serde_json::Value {
        json!({"team": "team-a", "models": ["m"], "fallbacks": ["backup"], "versions": [
            {"name": "v1", "weight": 90, "upstreams": ["http://127.0.0.1:9"]},
            {"name": "v2", "role": "canary", "weight": 10, "upstreams": ["http://127.0.0.1:9"]}]})
    }

    #[test]
    fn deployment_takes_the_gateway_spec_with_a_team_and_names_bad_fields() {
        let v = check(deployment(deployment_spec())).unwrap();
        assert_eq!(v.team.as_deref(), Some("team-a"));
        assert_eq!(v.document.spec["team"], "team-a");
        assert!(v.document.spec.get("name").is_none());
        assert_eq!(v.document.spec["versions"][0]["timeoutMs"], 30000);
        let refs: Vec<_> = v
            .references
            .iter()
            .map(|r| (r.kind, r.name.as_str()))
            .collect();
        assert_eq!(refs, [("Team", "team-a"), ("Deployment", "backup")]);
        let cases: [(&str, serde_json::Value, &str); 7] = [
            ("/team", json!(null), "spec.team: missing"),
            ("/name", json!("x"), "spec.name: not allowed"),
            (
                "/versions/1/weight",
                json!(9_000_000),
                "spec.versions[1].weight: 9000000 is above the maximum",
            ),
            (
                "/versions/0/upstreams/0",
                json!("ftp://x"),
                "spec.versions[0].upstreams[0]: `ftp://x` must start with http://",
            ),
            (
                "/versions/0/colour",
                json!(1),
                "spec.versions[0].colour: unknown field `colour`",
            ),
            (
                "/fallbacks/0",
                json!("chat"),
                "spec.fallbacks[0]: a deployment cannot fall back to itself",
            ),
            ("/versions/0/weight", json!(0), "spec.versions: "),
        ];
        for (pointer, value, want) in cases {
            let mut spec = deployment_spec();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = spec.pointer_mut(parent).unwrap();
            if value.is_null() {
                target.as_object_mut().unwrap().remove(key);
            } else if let Some(a) = target.as_array_mut() {
                a[key.parse::<usize>().unwrap()] = value;
            } else {
                target[key] = value;
            }
            let err = check(deployment(spec)).unwrap_err();
            assert!(
                err.contains("(Deployment/chat): ") && err.contains(want),
                "{pointer}: {err}"
            );
        }
        let err = check(
            json!({"apiVersion": "plinth/v1", "kind": "DeploymentStatus",
            "metadata": {"name": "chat"}, "spec": {}}),
        )
        .unwrap_err();
        assert!(err.contains("written by the server's gateway"), "{err}");
    }
}
