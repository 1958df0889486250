//! Request and response bodies of the HTTP API that are not resources themselves.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::identity::Role;

/// One document to apply, with where it came from so errors can name the file and position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcedDocument {
    /// The file the document was read from (for error messages only).
    #[serde(default)]
    pub file: Option<String>,
    /// 1-based position of the document in its file.
    #[serde(default)]
    pub index: Option<usize>,
    /// The document itself: `apiVersion`, `kind`, `metadata`, `spec`.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

/// `POST /api/v1/apply` body (JSON). A raw multi-document YAML body is accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub documents: Vec<SourcedDocument>,
    /// Validate and compute the diff without storing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// What applying one document did (or would do, on a dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// One changed field between the stored and the applied document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldChange {
    /// Dotted path, e.g. `spec.quotas[0].gpus`.
    pub path: String,
    #[schema(value_type = Object)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyResult {
    pub kind: String,
    pub name: String,
    pub action: ApplyAction,
    /// Generation after the apply (the current one when unchanged or on a dry run).
    pub generation: i64,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    pub dry_run: bool,
    pub results: Vec<ApplyResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeleteResponse {
    pub kind: String,
    pub name: String,
    pub dry_run: bool,
    /// The document that was (or on a dry run would be) deleted.
    #[schema(value_type = Object)]
    pub deleted: serde_json::Value,
}

/// A token as the store keeps it: only a salted hash of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub team: Option<String>,
    pub role: Role,
    /// Hex salt and hex SHA-256(salt || secret).
    pub salt: String,
    pub hash: String,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
}

/// A token as the API shows it (never the secret or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub team: Option<String>,
    pub role: Role,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
}

impl From<TokenRecord> for TokenInfo {
    fn from(t: TokenRecord) -> Self {
        TokenInfo {
            id: t.id,
            name: t.name,
            team: t.team,
            role: t.role,
            created_at: t.created_at,
            created_by: t.created_by,
            revoked_at: t.revoked_at,
        }
    }
}

/// `POST /api/v1/tokens` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Who or what will use the token: 1 to 100 printable characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The team (an existing Team's name); required for every role but admin.
    #[serde(default)]
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub team: Option<String>,
    pub role: Role,
}

/// The response to creating a token: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenInfo,
}

/// Counts and recent activity for the console's overview and `plinth status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    pub pools: usize,
    pub teams: usize,
    pub queues: usize,
    /// Accelerators across visible pools (nodes × accelerators per node).
    pub gpus: u64,
    /// CPU cores across visible pools.
    pub cpus: u64,
    pub nodes: u64,
    pub audit_events: i64,
    pub recent: Vec<crate::audit::AuditEvent>,
}

/// `POST /api/v1/datacontracts/{name}/versions` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDatasetRequest {
    /// A data file or folder readable by the server; relative paths are taken from the server's
    /// working directory.
    #[schema(min_length = 1)]
    pub path: String,
    /// "Now" for freshness and retention checks (RFC 3339); default: the server's clock.
    #[serde(default)]
    pub now: Option<String>,
}

/// The spec of a `DatasetVersion`: one registered dataset checked against its contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetVersionSpec {
    /// The DataContract object's name.
    pub contract: String,
    /// 1 for the first version of the contract's dataset, then +1.
    pub version: u64,
    /// The path as given.
    pub path: String,
    /// `sha256:<hex>` of the data file (of each file's path and digest, for a folder); absent
    /// when the data could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub rows: u64,
    /// `passed`, `failed` or `error`.
    pub status: String,
    /// Checks per status (`passed`, `failed`, `warning`, `error`, `unsupported`, `not_evaluated`).
    pub counts: std::collections::BTreeMap<String, u64>,
    /// The "now" the checks ran with (RFC 3339).
    pub checked_at: String,
    /// The newest value of the freshness SLA element, when the contract has one and it was
    /// measured (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<String>,
    /// Bytes of data read (the file, or every file of a folder); absent when unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The file name given with an upload (`POST .../versions/upload?filename=`); then `path`
    /// is where the server keeps the uploaded bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// True when a per-column profile was stored with this version (`.../profile`).
    #[serde(default)]
    pub profiled: bool,
    /// The full check report.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

/// A registered dataset version as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetVersion {
    /// `<contract>-v<version>`.
    pub name: String,
    pub registered_at: String,
    pub registered_by: String,
    pub spec: DatasetVersionSpec,
}

/// `POST /api/v1/datacontracts/{name}/reference` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetReferenceRequest {
    /// The registered version (its number) that drift is measured against by default.
    #[schema(minimum = 1)]
    pub version: u64,
}

/// The stored drift reference of a DataContract's dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetReference {
    pub contract: String,
    pub version: u64,
    pub set_at: String,
    pub set_by: String,
}

/// Drift thresholds of one column (or the defaults): a column drifts when its PSI is at least
/// `psi`, its KS p-value (numeric) is below `ksPvalue`, its Jensen–Shannon distance
/// (categorical) is at least `js`, or its chi-square p-value (categorical) is below
/// `chi2Pvalue`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftThresholds {
    pub psi: f64,
    #[serde(default)]
    pub ks_pvalue: Option<f64>,
    pub js: f64,
    #[serde(default)]
    pub chi2_pvalue: Option<f64>,
}

/// Drift of one column between two stored profiles, with the thresholds that decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetColumnDrift {
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    /// `exact` (the profiles hold every value) or `profile` (samples, listed categories).
    pub source: String,
    pub reference_count: u64,
    pub current_count: u64,
    #[serde(default)]
    pub psi: Option<f64>,
    #[serde(default)]
    pub ks_statistic: Option<f64>,
    #[serde(default)]
    pub ks_pvalue: Option<f64>,
    #[serde(default)]
    pub js_distance: Option<f64>,
    #[serde(default)]
    pub chi2: Option<f64>,
    #[serde(default)]
    pub chi2_pvalue: Option<f64>,
    pub thresholds: DriftThresholds,
    pub drifted: bool,
    /// Why the column did or did not drift, naming the deciding statistics.
    pub reason: String,
}

/// `GET /api/v1/datacontracts/{name}/drift`: drift between two versions' stored profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetDrift {
    pub contract: String,
    /// The reference version's number.
    pub reference: u64,
    /// The current version's number.
    pub current: u64,
    /// Where the reference came from: `query`, `stored` (the contract's reference) or
    /// `first` (version 1).
    pub reference_from: String,
    /// `drift` or `no_drift`.
    pub verdict: String,
    pub drifted_columns: Vec<String>,
    /// Thresholds for every column without its own.
    pub thresholds: DriftThresholds,
    pub columns: Vec<DatasetColumnDrift>,
}
