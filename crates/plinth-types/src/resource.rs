//! Declarative resources: the YAML/JSON document a user writes, the row the store keeps, and the
//! view the API returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The only `apiVersion` this release understands.
pub const API_VERSION: &str = "plinth/v1";

/// `metadata` of a document as a user writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectMeta {
    /// Lowercase letters, digits and `-`, 1 to 63 characters, starting with a letter.
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A resource document: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Document {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
}

/// A resource as the store keeps it. `document` is the normalized document (typed spec
/// re-serialized, so defaults are explicit); `digest` is the SHA-256 of its canonical JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    pub kind: String,
    pub name: String,
    /// Owning team; `None` for cluster-scoped kinds such as Pool.
    pub team: Option<String>,
    pub document: Document,
    pub digest: String,
    /// 1 on create, +1 on every change.
    pub generation: i64,
    /// RFC 3339 UTC timestamps.
    pub created_at: String,
    pub updated_at: String,
    /// The audit actor of the last change.
    pub updated_by: String,
}

/// Server-managed fields shown under `status` in API responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub generation: i64,
    pub digest: String,
    pub created_at: String,
    pub updated_at: String,
    pub updated_by: String,
}

/// A resource as the API returns it: the document plus `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceView {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub status: ObjectStatus,
}

impl From<StoredObject> for ResourceView {
    fn from(o: StoredObject) -> Self {
        ResourceView {
            api_version: o.document.api_version,
            kind: o.document.kind,
            metadata: o.document.metadata,
            spec: o.document.spec,
            status: ObjectStatus {
                team: o.team,
                generation: o.generation,
                digest: o.digest,
                created_at: o.created_at,
                updated_at: o.updated_at,
                updated_by: o.updated_by,
            },
        }
    }
}
