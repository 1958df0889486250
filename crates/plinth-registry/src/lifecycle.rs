//! The model lifecycle on top of the registry: release gates, promotion to staging, canary and
//! production, approvals, rollback, deprecation, and the registry's writes to the lineage graph.
//!
//! Each registered model has one server-managed `ModelLifecycle` object (named like the model)
//! holding which version is in each stage, the earlier production versions (for rollback),
//! approvals and deprecations. Every change to it is one store commit with a generation
//! precondition plus an audit event, so two promotions racing on the same state cannot both
//! win: the second fails with a conflict and changes nothing. MLflow's stages and aliases are
//! then brought in step (`production` alias and stage, `staging` alias and stage, `canary`
//! alias).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, SecondsFormat, Utc};
use plinth_config::kinds::{
    MODEL_LIFECYCLE_KIND, MetricGate, PROMOTION_TARGETS, RELEASE_POLICY_KIND, ReleasePolicySpec,
};
use plinth_store::lineage::{Direction, EdgeKind, EdgeUpdate, LineageWrite, NodeRef, NodeUpdate};
use plinth_store::tracking::{KeyValue, ModelVersion, NewModelVersion, RegistrySearch};
use plinth_store::{Batch, Op, Precondition, Store, StoreError};
use plinth_types::audit::NewAuditEvent;
use plinth_types::{API_VERSION, Document, ErrorCode, Identity, ObjectMeta, Role, StoredObject};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::manifest::{
    FieldChange, Manifest, ManifestPatch, TAG_DEPRECATED, TAG_TEAM, diff, manifest_of,
    plinth_dataset_version,
};

/// The kind of the dataset versions the contract gate reads.
const DATASET_VERSION_KIND: &str = "DatasetVersion";
/// The kind of gateway deployments, searched for users of a deprecated version.
const DEPLOYMENT_KIND: &str = "Deployment";
const PRODUCER: &str = concat!("urn:plinth:plinth-registry:", env!("CARGO_PKG_VERSION"));

/// A lifecycle operation that failed: a Plinth error code, a message, and details (the gate
/// verdicts of a refused promotion).
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<String>,
}

impl LifecycleError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        LifecycleError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        LifecycleError::new(ErrorCode::InvalidArgument, message)
    }

    fn denied(message: impl Into<String>) -> Self {
        LifecycleError::new(ErrorCode::PermissionDenied, message)
    }
}

impl From<StoreError> for LifecycleError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        LifecycleError::new(code, e.to_string())
    }
}

type LResult<T> = Result<T, LifecycleError>;

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

// ---------------------------------------------------------------------------------------------
// The lifecycle object

/// An approval of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The approver's name (the token's name).
    pub by: String,
    pub actor: String,
    pub role: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A deprecated version: when it goes away, why, and what still used it when deprecated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deprecation {
    /// `YYYY-MM-DD`.
    pub sunset: String,
    pub reason: String,
    pub by: String,
    pub at: String,
    pub users: Vec<String>,
}

/// The `spec` of a `ModelLifecycle` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleSpec {
    pub model: String,
    /// Promotion target (`staging`, `canary`, `production`) to the version in it.
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
    /// Earlier production versions, oldest first; rollback restores the last one.
    #[serde(default)]
    pub production_history: Vec<String>,
    /// Version to its approvals.
    #[serde(default)]
    pub approvals: BTreeMap<String, Vec<Approval>>,
    /// Version to its deprecation.
    #[serde(default)]
    pub deprecations: BTreeMap<String, Deprecation>,
}

/// The lifecycle of a model and the generation it was read at (0: not stored yet).
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    pub spec: LifecycleSpec,
    pub generation: i64,
    created_at: Option<String>,
    digest: Option<String>,
}

pub async fn load(store: &Store, model: &str) -> LResult<Lifecycle> {
    match store.get_object(MODEL_LIFECYCLE_KIND, model).await? {
        None => Ok(Lifecycle {
            spec: LifecycleSpec {
                model: model.to_string(),
                ..Default::default()
            },
            ..Default::default()
        }),
        Some(o) => {
            let spec: LifecycleSpec =
                serde_json::from_value(o.document.spec.clone()).map_err(|e| {
                    LifecycleError::new(
                        ErrorCode::Internal,
                        format!("the stored lifecycle of model {model:?} does not decode: {e}"),
                    )
                })?;
            Ok(Lifecycle {
                spec,
                generation: o.generation,
                created_at: Some(o.created_at),
                digest: Some(o.digest),
            })
        }
    }
}

fn digest_of(doc: &Document) -> String {
    let value = serde_json::to_value(doc).unwrap_or(Value::Null);
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

/// Stores `spec` as the next generation of `current`, with one audit event, or fails with a
/// conflict when the object changed since it was read.
async fn save(
    store: &Store,
    who: &Identity,
    current: &Lifecycle,
    spec: &LifecycleSpec,
    action: &str,
    detail: Value,
) -> LResult<i64> {
    let ts = now_text();
    let document = Document {
        api_version: API_VERSION.to_string(),
        kind: MODEL_LIFECYCLE_KIND.to_string(),
        metadata: ObjectMeta {
            name: spec.model.clone(),
            ..Default::default()
        },
        spec: serde_json::to_value(spec).unwrap_or_default(),
    };
    let digest = digest_of(&document);
    let generation = current.generation + 1;
    let object = StoredObject {
        kind: MODEL_LIFECYCLE_KIND.to_string(),
        name: spec.model.clone(),
        team: None,
        document,
        digest: digest.clone(),
        generation,
        created_at: current.created_at.clone().unwrap_or_else(|| ts.clone()),
        updated_at: ts.clone(),
        updated_by: who.actor(),
    };
    let precondition = if current.generation == 0 {
        Precondition::Absent
    } else {
        Precondition::Generation(current.generation)
    };
    let batch = Batch::new()
        .op(Op::PutObject {
            object,
            precondition,
        })
        .event(NewAuditEvent {
            ts,
            actor: who.actor(),
            action: action.to_string(),
            kind: MODEL_LIFECYCLE_KIND.to_string(),
            name: spec.model.clone(),
            team: None,
            before_digest: current.digest.clone(),
            after_digest: Some(digest),
            detail,
        });
    match store.commit(batch).await {
        Ok(_) => Ok(generation),
        Err(StoreError::Conflict(_)) => Err(LifecycleError::new(
            ErrorCode::Conflict,
            format!(
                "model {:?} changed while this request was evaluated (another promotion, \
                 approval or rollback committed first, generation {} is no longer current); \
                 nothing was changed: re-run it to evaluate against the new state",
                spec.model, current.generation
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Release gates

/// One condition of a release policy and whether the version meets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// What is checked, e.g. `metric accuracy >= 0.9`.
    pub gate: String,
    pub passed: bool,
    /// The values it was decided on.
    pub detail: String,
}

impl Verdict {
    fn new(gate: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        Verdict {
            gate: gate.into(),
            passed,
            detail: detail.into(),
        }
    }

    /// `PASS gate: detail` / `FAIL gate: detail`.
    pub fn line(&self) -> String {
        format!(
            "{} {}: {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.gate,
            self.detail
        )
    }
}

/// The gates of one version for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateReport {
    pub model: String,
    pub version: String,
    /// `staging`, `canary` or `production`.
    pub target: String,
    /// The ReleasePolicy applied (none: only the built-in checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The production version relative conditions compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<String>,
    pub verdicts: Vec<Verdict>,
    /// True when every verdict passed.
    pub passed: bool,
}

/// `staging`, `canary` or `production`, matched case-insensitively.
pub fn parse_target(s: &str) -> LResult<&'static str> {
    PROMOTION_TARGETS
        .into_iter()
        .find(|t| t.eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| {
            LifecycleError::invalid(format!(
                "to: {s:?} is not a promotion target; expected staging, canary or production"
            ))
        })
}

/// The policy for `model`: its own (`spec.model`), else the default (no `spec.model`); the first
/// by name when several match.
pub async fn policy_for(
    store: &Store,
    model: &str,
) -> LResult<Option<(String, ReleasePolicySpec)>> {
    let mut own = None;
    let mut default = None;
    for o in store.list_objects(RELEASE_POLICY_KIND).await? {
        let spec: ReleasePolicySpec = match serde_json::from_value(o.document.spec.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(policy = %o.name, error = %e, "skipping a ReleasePolicy that does not decode");
                continue;
            }
        };
        match spec.model.as_deref() {
            Some(m) if m == model && own.is_none() => own = Some((o.name, spec)),
            None if default.is_none() => default = Some((o.name, spec)),
            _ => {}
        }
    }
    Ok(own.or(default))
}

fn fmt_num(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// `v >= bound` (or `<=`), allowing for the rounding of decimal fractions: 0.85 - 0.86 meets
/// `>= -0.01` as written.
fn within(op: &str, v: f64, bound: f64) -> bool {
    let slack = 1e-9 * bound.abs().max(1.0);
    if op == ">=" {
        v >= bound - slack
    } else {
        v <= bound + slack
    }
}

fn metric_verdicts(
    g: &MetricGate,
    m: &Manifest,
    production: Option<(&str, &Manifest)>,
    out: &mut Vec<Verdict>,
) {
    let value = m.eval_metrics.get(&g.metric).copied();
    for (op, bound) in [(">=", g.min), ("<=", g.max)] {
        let Some(bound) = bound else { continue };
        let gate = format!("metric {} {op} {}", g.metric, fmt_num(bound));
        out.push(match value {
            None => Verdict::new(gate, false, "the version has no such metric"),
            Some(v) => {
                let ok = within(op, v, bound);
                Verdict::new(gate, ok, format!("{} = {}", g.metric, fmt_num(v)))
            }
        });
    }
    for (op, bound) in [
        (">=", g.min_delta_vs_production),
        ("<=", g.max_delta_vs_production),
    ] {
        let Some(bound) = bound else { continue };
        let gate = format!("metric {} - production {op} {}", g.metric, fmt_num(bound));
        let verdict = match (value, production) {
            (None, _) => Verdict::new(gate, false, "the version has no such metric"),
            (Some(_), None) => Verdict::new(gate, true, "no production version to compare against"),
            (Some(v), Some((pv, pm))) => match pm.eval_metrics.get(&g.metric) {
                None => Verdict::new(
                    gate,
                    false,
                    format!("production version {pv} has no metric {}", g.metric),
                ),
                Some(p) => {
                    let d = v - p;
                    let ok = within(op, d, bound);
                    Verdict::new(
                        gate,
                        ok,
                        format!(
                            "{} = {} vs {} in production version {pv} (difference {})",
                            g.metric,
                            fmt_num(v),
                            fmt_num(*p),
                            fmt_num(d)
                        ),
                    )
                }
            },
        };
        out.push(verdict);
    }
}

fn budget_verdict(what: &str, metric: &str, budget: f64, unit: &str, m: &Manifest) -> Verdict {
    let gate = format!("{what} {metric} <= {}{unit}", fmt_num(budget));
    match m.eval_metrics.get(metric) {
        None => Verdict::new(gate, false, "the version has no such metric"),
        Some(v) => Verdict::new(
            gate,
            within("<=", *v, budget),
            format!("{metric} = {}{unit}", fmt_num(*v)),
        ),
    }
}

async fn contract_verdict(store: &Store, m: &Manifest) -> LResult<Verdict> {
    let gate = "training data passed its contracts";
    if m.datasets.is_empty() {
        return Ok(Verdict::new(gate, false, "the version records no datasets"));
    }
    let mut parts = Vec::new();
    let mut ok = true;
    for d in &m.datasets {
        let Some((contract, n)) = plinth_dataset_version(d) else {
            ok = false;
            parts.push(format!(
                "{d}: not a Plinth dataset version, contract unknown"
            ));
            continue;
        };
        let status = store
            .get_object(DATASET_VERSION_KIND, &format!("{contract}-v{n}"))
            .await?
            .and_then(|o| {
                o.document
                    .spec
                    .get("status")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        match status {
            Some(s) => {
                ok &= s == "passed";
                parts.push(format!("{d}: {s}"));
            }
            None => {
                ok = false;
                parts.push(format!("{d}: not registered"));
            }
        }
    }
    Ok(Verdict::new(gate, ok, parts.join(", ")))
}

fn approval_count(spec: &LifecycleSpec, version: &str, author: &str) -> BTreeSet<String> {
    spec.approvals
        .get(version)
        .into_iter()
        .flatten()
        .filter(|a| a.by != author && (a.role == "maintainer" || a.role == "admin"))
        .map(|a| a.by.clone())
        .collect()
}

async fn version(store: &Store, model: &str, version: &str) -> LResult<ModelVersion> {
    Ok(store.get_model_version(model, version).await?)
}

/// Evaluates every gate of the policy that applies to `model` for `target`, plus the built-in
/// check that the version is not deprecated.
pub async fn evaluate(
    store: &Store,
    lc: &Lifecycle,
    mv: &ModelVersion,
    target: &str,
) -> LResult<GateReport> {
    let model = &mv.name;
    let manifest = manifest_of(store, mv).await;
    let mut verdicts = Vec::new();
    verdicts.push(match lc.spec.deprecations.get(&mv.version) {
        Some(d) => Verdict::new(
            "not deprecated",
            false,
            format!("deprecated, sunset {}: {}", d.sunset, d.reason),
        ),
        None => Verdict::new("not deprecated", true, "not deprecated"),
    });
    let production = lc.spec.stages.get("production").cloned();
    let policy = policy_for(store, model).await?;
    if let Some((_, p)) = policy
        .as_ref()
        .filter(|(_, p)| p.stages.iter().any(|s| s == target))
    {
        // The version in production compares with itself (a difference of 0).
        let prod_manifest = match production.as_deref() {
            Some(v) if v == mv.version => Some((v.to_string(), manifest.clone())),
            Some(v) => match store.get_model_version(model, v).await {
                Ok(pmv) => Some((v.to_string(), manifest_of(store, &pmv).await)),
                Err(_) => None,
            },
            None => None,
        };
        let prod_ref = prod_manifest.as_ref().map(|(v, m)| (v.as_str(), m));
        for g in &p.metrics {
            metric_verdicts(g, &manifest, prod_ref, &mut verdicts);
        }
        if let Some(b) = p.latency_budget_ms {
            verdicts.push(budget_verdict(
                "latency",
                &p.latency_metric,
                b,
                " ms",
                &manifest,
            ));
        }
        if let Some(b) = p.cost_per_1k_budget {
            verdicts.push(budget_verdict(
                "cost per 1,000 inferences",
                &p.cost_metric,
                b,
                "",
                &manifest,
            ));
        }
        if p.require_contract_passed {
            verdicts.push(contract_verdict(store, &manifest).await?);
        }
        if p.approvals > 0
            && (p.approval_stages.is_empty() || p.approval_stages.iter().any(|s| s == target))
        {
            let got = approval_count(&lc.spec, &mv.version, &mv.user_id);
            let names: Vec<&str> = got.iter().map(String::as_str).collect();
            verdicts.push(Verdict::new(
                format!(
                    "approvals >= {} (maintainers other than {})",
                    p.approvals, mv.user_id
                ),
                got.len() >= p.approvals as usize,
                if names.is_empty() {
                    "0 approvals".to_string()
                } else {
                    format!("{} ({})", names.len(), names.join(", "))
                },
            ));
        }
    }
    Ok(GateReport {
        model: model.clone(),
        version: mv.version.clone(),
        target: target.to_string(),
        policy: policy.map(|(n, _)| n),
        production,
        passed: verdicts.iter().all(|v| v.passed),
        verdicts,
    })
}

/// The gates of `version` for `target`, without promoting.
pub async fn gates(store: &Store, model: &str, ver: &str, target: &str) -> LResult<GateReport> {
    let target = parse_target(target)?;
    let mv = version(store, model, ver).await?;
    let lc = load(store, model).await?;
    evaluate(store, &lc, &mv, target).await
}

// ---------------------------------------------------------------------------------------------
// Promotion, approval, rollback, deprecation

/// How MLflow's stages and aliases follow a lifecycle change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlflowSync {
    /// Plinth's own routes: `production` and `staging` move the stage (archiving the version
    /// that held it) and the alias of the same name; `canary` moves its alias.
    Standard,
    /// The change came from MLflow's own call, which the caller carries out as asked.
    None,
}

/// `POST .../promote` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteRequest {
    /// `staging`, `canary` or `production`.
    pub to: String,
    /// Promote although gates failed: admins only, with a reason; audited.
    #[serde(default, rename = "override")]
    pub override_gates: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Only promote if the model's lifecycle is still at this generation (from `GET
    /// /api/v1/models/{name}`); 0 means "never changed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_generation: Option<i64>,
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromoteResult {
    pub gates: GateReport,
    /// The version that held the target before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// True when failed gates were overridden.
    pub overridden: bool,
    /// The lifecycle's generation after the change.
    pub generation: i64,
}

fn require(who: &Identity, role: Role, doing: &str) -> LResult<()> {
    if who.role < role {
        return Err(LifecycleError::denied(format!(
            "{} (role {}) may not {doing}: requires {role} or above",
            who.actor(),
            who.role
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Team scoping

/// The team in a registered model's tags (`plinth.team`), if any.
pub fn team_of_tags(tags: &[KeyValue]) -> Option<String> {
    tags.iter()
        .find(|t| t.key == TAG_TEAM)
        .map(|t| t.value.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The team that owns `model`, `None` for a model without one (created by an admin token
/// without a team, or before models had teams). 404 for an unknown model.
pub async fn model_team(store: &Store, model: &str) -> LResult<Option<String>> {
    Ok(team_of_tags(&store.get_registered_model(model).await?.tags))
}

/// May `who` see a model owned by `team`? Like every team-owned object: its team's tokens and
/// admins; a model without a team is visible to everyone.
pub fn may_read(who: &Identity, team: Option<&str>) -> bool {
    team.is_none_or(|t| who.in_team(t))
}

/// Fails with 404, as for any object of another team, when `who` may not see `model`.
pub async fn check_visible(store: &Store, who: &Identity, model: &str) -> LResult<Option<String>> {
    let team = model_team(store, model).await?;
    if !may_read(who, team.as_deref()) {
        return Err(LifecycleError::new(
            ErrorCode::NotFound,
            format!("registered model {model:?} not found"),
        ));
    }
    Ok(team)
}

/// `who` may `doing` on `model` with `role` or above and, when the model belongs to a team, as
/// a token of that team (admins act for every team). Returns the model's team.
pub async fn authorize_model(
    store: &Store,
    who: &Identity,
    model: &str,
    role: Role,
    doing: &str,
) -> LResult<Option<String>> {
    let team = model_team(store, model).await?;
    let in_team = team.as_deref().is_none_or(|t| who.in_team(t));
    if who.role < role || !in_team {
        let needs = match &team {
            Some(t) => format!("{role} of team {t} or admin"),
            None => format!("{role} or above"),
        };
        return Err(LifecycleError::denied(format!(
            "{} (role {}, team {}) may not {doing} of model {model:?}{}: requires {needs}",
            who.actor(),
            who.role,
            who.team.as_deref().unwrap_or("-"),
            team.as_deref()
                .map(|t| format!(", which belongs to team {t}"))
                .unwrap_or_default(),
        )));
    }
    Ok(team)
}

/// The team a new model of `who` gets: `requested` (admins name any existing Team; others only
/// their own), else the caller's team (none for an admin token without one).
pub async fn team_for_new_model(
    store: &Store,
    who: &Identity,
    requested: Option<&str>,
) -> LResult<Option<String>> {
    let Some(t) = requested.map(str::trim) else {
        return Ok(who.team.clone());
    };
    if !who.is_admin() && who.team.as_deref() != Some(t) {
        return Err(LifecycleError::denied(format!(
            "{} (role {}, team {}) may not create a model for team {t:?}: only admins name \
             another team",
            who.actor(),
            who.role,
            who.team.as_deref().unwrap_or("-")
        )));
    }
    if store.get_object("Team", t).await?.is_none() {
        return Err(LifecycleError::invalid(format!(
            "team: Team {t:?} does not exist"
        )));
    }
    Ok(Some(t.to_string()))
}

/// The tags of a registered model created through MLflow by `who`: its `plinth.team` tag is
/// the one `who` may give (see [`team_for_new_model`]), else the caller's team.
pub async fn mlflow_model_tags(
    store: &Store,
    who: &Identity,
    mut tags: Vec<KeyValue>,
) -> LResult<Vec<KeyValue>> {
    let requested = team_of_tags(&tags);
    tags.retain(|t| t.key != TAG_TEAM);
    if let Some(team) = team_for_new_model(store, who, requested.as_deref()).await? {
        tags.push(KeyValue::new(TAG_TEAM, team));
    }
    Ok(tags)
}

/// Setting or deleting a registered model's `plinth.team` tag through MLflow: admins only
/// (it decides who may promote the model).
pub fn check_model_tag(who: &Identity, key: &str) -> LResult<()> {
    if key == TAG_TEAM && !who.is_admin() {
        return Err(LifecycleError::denied(format!(
            "{} (role {}) may not change a model's {TAG_TEAM} tag: requires admin",
            who.actor(),
            who.role
        )));
    }
    Ok(())
}

/// Evaluates the gates and, when they pass (or an admin overrides them with a reason), moves
/// `target` to the version in one commit with a generation check.
pub async fn promote(
    store: &Store,
    who: &Identity,
    model: &str,
    ver: &str,
    req: &PromoteRequest,
    sync: MlflowSync,
) -> LResult<PromoteResult> {
    require(who, Role::Member, "promote model versions")?;
    let target = parse_target(&req.to)?;
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if req.override_gates {
        if !who.is_admin() {
            return Err(LifecycleError::denied(format!(
                "{} (role {}) may not override release gates: requires admin",
                who.actor(),
                who.role
            )));
        }
        if reason.is_none() {
            return Err(LifecycleError::invalid(
                "reason: an override needs a reason (--reason TEXT)",
            ));
        }
    }
    // Members of the model's team promote when every gate passes (approvals by maintainers
    // are a gate); other teams may not.
    authorize_model(store, who, model, Role::Member, "promote versions").await?;
    let mv = version(store, model, ver).await?;
    let lc = load(store, model).await?;
    if let Some(want) = req.expected_generation
        && want != lc.generation
    {
        return Err(LifecycleError::new(
            ErrorCode::Conflict,
            format!(
                "model {model:?} is at generation {}, not the expected {want}: it changed since \
                 it was read; nothing was changed",
                lc.generation
            ),
        ));
    }
    let report = evaluate(store, &lc, &mv, target).await?;
    if !report.passed && !req.override_gates {
        let failed = report.verdicts.iter().filter(|v| !v.passed).count();
        let mut e = LifecycleError::new(
            ErrorCode::Conflict,
            format!(
                "promotion of {model} version {} to {target} refused: {failed} of {} gates failed",
                mv.version,
                report.verdicts.len()
            ),
        );
        e.details = report.verdicts.iter().map(Verdict::line).collect();
        return Err(e);
    }
    let mut spec = lc.spec.clone();
    let previous = spec.stages.get(target).cloned();
    if target == "production"
        && let Some(p) = &previous
        && *p != mv.version
    {
        spec.production_history.push(p.clone());
    }
    // Moving up (staging < canary < production) takes the version out of the lower targets.
    let rank = |t: &str| PROMOTION_TARGETS.iter().position(|x| *x == t);
    spec.stages
        .retain(|t, v| *v != mv.version || rank(t) > rank(target));
    spec.stages.insert(target.to_string(), mv.version.clone());
    let overridden = req.override_gates && !report.passed;
    let action = if overridden {
        "model.promote.override"
    } else {
        "model.promote"
    };
    let failed: Vec<String> = report
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(Verdict::line)
        .collect();
    let generation = save(
        store,
        who,
        &lc,
        &spec,
        action,
        json!({
            "version": mv.version, "to": target, "previous": previous,
            "policy": report.policy, "overridden": overridden, "reason": reason,
            "failedGates": failed,
        }),
    )
    .await?;
    if sync == MlflowSync::Standard {
        sync_mlflow(store, model, target, &mv.version).await;
    }
    Ok(PromoteResult {
        gates: report,
        previous,
        overridden,
        generation,
    })
}

/// Moves MLflow's stage and alias after a committed lifecycle change. The change stands either
/// way, so a failure here is logged (the next promotion or rollback moves them again).
async fn sync_mlflow(store: &Store, model: &str, target: &str, ver: &str) {
    let stage = match target {
        "production" => Some("Production"),
        "staging" => Some("Staging"),
        _ => None,
    };
    let mut result = Ok(());
    if let Some(stage) = stage {
        result = store
            .transition_model_version_stage(model, ver, stage, true, now_ms())
            .await
            .map(|_| ());
    }
    if result.is_ok() {
        result = store.set_model_alias(model, target, ver).await;
    }
    if let Err(e) = result {
        tracing::warn!(%model, version = %ver, %target, error = %e, "MLflow stage and alias not moved with the lifecycle");
    }
}

/// After MLflow moved a version out of Staging or Production (to None or Archived), the
/// lifecycle forgets it in those targets.
pub async fn forget_stage(store: &Store, who: &Identity, model: &str, ver: &str) -> LResult<()> {
    authorize_model(
        store,
        who,
        model,
        Role::Member,
        "move the stages of versions",
    )
    .await?;
    let lc = load(store, model).await?;
    let mut spec = lc.spec.clone();
    spec.stages.retain(|t, v| !(*v == ver && t != "canary"));
    if spec == lc.spec {
        return Ok(());
    }
    save(
        store,
        who,
        &lc,
        &spec,
        "model.unstage",
        json!({"version": ver, "via": "mlflow transition-stage"}),
    )
    .await?;
    Ok(())
}

/// After MLflow renamed or deleted a model, its lifecycle moves to the new name (`Some`) or goes
/// (`None`), in one commit with its audit event, so a model created later under the old name
/// does not inherit stages or approvals.
pub async fn move_model(
    store: &Store,
    who: &Identity,
    model: &str,
    new_name: Option<&str>,
) -> LResult<()> {
    let lc = load(store, model).await?;
    if lc.generation == 0 {
        return Ok(());
    }
    let ts = now_text();
    let mut batch = Batch::new().op(Op::DeleteObject {
        kind: MODEL_LIFECYCLE_KIND.to_string(),
        name: model.to_string(),
        precondition: Precondition::Generation(lc.generation),
    });
    let mut after = None;
    if let Some(new_name) = new_name {
        let spec = LifecycleSpec {
            model: new_name.to_string(),
            ..lc.spec.clone()
        };
        let document = Document {
            api_version: API_VERSION.to_string(),
            kind: MODEL_LIFECYCLE_KIND.to_string(),
            metadata: ObjectMeta {
                name: new_name.to_string(),
                ..Default::default()
            },
            spec: serde_json::to_value(&spec).unwrap_or_default(),
        };
        let digest = digest_of(&document);
        after = Some(digest.clone());
        batch = batch.op(Op::PutObject {
            object: StoredObject {
                kind: MODEL_LIFECYCLE_KIND.to_string(),
                name: new_name.to_string(),
                team: None,
                document,
                digest,
                generation: 1,
                created_at: ts.clone(),
                updated_at: ts.clone(),
                updated_by: who.actor(),
            },
            precondition: Precondition::None,
        });
    }
    let batch = batch.event(NewAuditEvent {
        ts,
        actor: who.actor(),
        action: if new_name.is_some() {
            "model.rename".into()
        } else {
            "model.delete".into()
        },
        kind: MODEL_LIFECYCLE_KIND.to_string(),
        name: model.to_string(),
        team: None,
        before_digest: lc.digest.clone(),
        after_digest: after,
        detail: json!({"newName": new_name, "via": "mlflow"}),
    });
    store.commit(batch).await?;
    Ok(())
}

/// `POST .../approve` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproveRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Records `who`'s approval of a version: maintainers and admins, not the version's author,
/// once each.
pub async fn approve(
    store: &Store,
    who: &Identity,
    model: &str,
    ver: &str,
    comment: Option<String>,
) -> LResult<Vec<Approval>> {
    require(who, Role::Maintainer, "approve model versions")?;
    authorize_model(store, who, model, Role::Maintainer, "approve versions").await?;
    let mv = version(store, model, ver).await?;
    if who.name == mv.user_id {
        return Err(LifecycleError::denied(format!(
            "{} registered version {} of {model} and may not approve it: approvals come from \
             maintainers other than the author",
            who.name, mv.version
        )));
    }
    let lc = load(store, model).await?;
    let mut spec = lc.spec.clone();
    let list = spec.approvals.entry(mv.version.clone()).or_default();
    if list.iter().any(|a| a.by == who.name) {
        return Err(LifecycleError::new(
            ErrorCode::AlreadyExists,
            format!(
                "{} already approved version {} of {model}",
                who.name, mv.version
            ),
        ));
    }
    list.push(Approval {
        by: who.name.clone(),
        actor: who.actor(),
        role: who.role.to_string(),
        at: now_text(),
        comment: comment.filter(|c| !c.trim().is_empty()),
    });
    let out = list.clone();
    save(
        store,
        who,
        &lc,
        &spec,
        "model.approve",
        json!({"version": mv.version, "author": mv.user_id}),
    )
    .await?;
    Ok(out)
}

/// `POST .../rollback` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackResult {
    pub model: String,
    /// The production version before.
    pub from: String,
    /// The production version now.
    pub to: String,
    pub generation: i64,
}

/// Restores the previous production version in one step: maintainers and admins.
pub async fn rollback(
    store: &Store,
    who: &Identity,
    model: &str,
    reason: Option<String>,
) -> LResult<RollbackResult> {
    require(who, Role::Maintainer, "roll back models")?;
    authorize_model(store, who, model, Role::Maintainer, "roll back").await?;
    let lc = load(store, model).await?;
    let mut spec = lc.spec.clone();
    let Some(from) = spec.stages.get("production").cloned() else {
        return Err(LifecycleError::new(
            ErrorCode::Conflict,
            format!("model {model:?} has no production version to roll back"),
        ));
    };
    let to = loop {
        let Some(p) = spec.production_history.pop() else {
            return Err(LifecycleError::new(
                ErrorCode::Conflict,
                format!(
                    "model {model:?} has no earlier production version to roll back to \
                     (production is version {from})"
                ),
            ));
        };
        // A version deleted since is skipped.
        if p != from && store.get_model_version(model, &p).await.is_ok() {
            break p;
        }
    };
    spec.stages.insert("production".into(), to.clone());
    let generation = save(
        store,
        who,
        &lc,
        &spec,
        "model.rollback",
        json!({"from": from, "to": to, "reason": reason}),
    )
    .await?;
    sync_mlflow(store, model, "production", &to).await;
    Ok(RollbackResult {
        model: model.to_string(),
        from,
        to,
        generation,
    })
}

/// `POST .../deprecate` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeprecateRequest {
    /// `YYYY-MM-DD`: the day the version goes away.
    pub sunset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A deprecation as recorded, with what still used the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeprecateResult {
    pub model: String,
    pub version: String,
    pub deprecation: Deprecation,
    /// The warning shown to its users (also the MLflow version tag `plinth.deprecated`).
    pub warning: String,
}

/// What still uses a version: MLflow aliases and stage, lifecycle targets, gateway deployments
/// that name it, and lineage consumers downstream of its node.
pub async fn users_of(store: &Store, lc: &Lifecycle, mv: &ModelVersion) -> LResult<Vec<String>> {
    let mut users = BTreeSet::new();
    for a in &mv.aliases {
        users.insert(format!("alias {a}"));
    }
    if mv.current_stage == "Staging" || mv.current_stage == "Production" {
        users.insert(format!("mlflow stage {}", mv.current_stage));
    }
    for (t, v) in &lc.spec.stages {
        if *v == mv.version {
            users.insert(format!("{t} version"));
        }
    }
    let needles = [
        format!("models:/{}/{}", mv.name, mv.version),
        format!("{}@{}", mv.name, mv.version),
    ];
    for o in store.list_objects(DEPLOYMENT_KIND).await? {
        if mentions(&o.document.spec, &needles) {
            users.insert(format!("deployment {}", o.name));
        }
    }
    let node = NodeRef::model(&mv.name, &mv.version);
    if store.lineage_node(&node).await?.is_some() {
        let g = store.lineage_graph(&node, Direction::Down, 1).await?;
        for n in g.nodes.iter().filter(|n| n.layer > 0) {
            users.insert(format!("lineage {}", n.node.key));
        }
    }
    Ok(users.into_iter().collect())
}

fn mentions(v: &Value, needles: &[String]) -> bool {
    match v {
        Value::String(s) => needles.iter().any(|n| s.contains(n.as_str())),
        Value::Array(a) => a.iter().any(|x| mentions(x, needles)),
        Value::Object(o) => o.values().any(|x| mentions(x, needles)),
        _ => false,
    }
}

/// Deprecates a version with a sunset date: records who still uses it, tags the MLflow version
/// with the warning, audits it.
pub async fn deprecate(
    store: &Store,
    who: &Identity,
    model: &str,
    ver: &str,
    req: &DeprecateRequest,
) -> LResult<DeprecateResult> {
    require(who, Role::Maintainer, "deprecate model versions")?;
    let sunset = NaiveDate::parse_from_str(req.sunset.trim(), "%Y-%m-%d").map_err(|e| {
        LifecycleError::invalid(format!(
            "sunset: {:?} is not a date YYYY-MM-DD: {e}",
            req.sunset
        ))
    })?;
    authorize_model(store, who, model, Role::Maintainer, "deprecate versions").await?;
    let mv = version(store, model, ver).await?;
    let lc = load(store, model).await?;
    let users = users_of(store, &lc, &mv).await?;
    let reason = req
        .reason
        .clone()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "no reason given".into());
    let deprecation = Deprecation {
        sunset: sunset.to_string(),
        reason: reason.clone(),
        by: who.name.clone(),
        at: now_text(),
        users: users.clone(),
    };
    let mut spec = lc.spec.clone();
    spec.deprecations
        .insert(mv.version.clone(), deprecation.clone());
    save(
        store,
        who,
        &lc,
        &spec,
        "model.deprecate",
        json!({"version": mv.version, "sunset": deprecation.sunset, "reason": reason, "users": users}),
    )
    .await?;
    let warning = format!(
        "{model} version {} is deprecated, sunset {}: {reason}",
        mv.version, deprecation.sunset
    );
    store
        .set_model_version_tag(
            model,
            &mv.version,
            &KeyValue::new(
                TAG_DEPRECATED,
                format!("sunset {}: {reason}", deprecation.sunset),
            ),
        )
        .await?;
    Ok(DeprecateResult {
        model: model.to_string(),
        version: mv.version,
        deprecation,
        warning,
    })
}

// ---------------------------------------------------------------------------------------------
// Registration, manifests, views

/// `POST /api/v1/models/{name}/versions` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    /// Where the model's files are: `runs:/RUN_ID/PATH`, `mlflow-artifacts:/...`, a URI.
    pub source: String,
    /// The MLflow run that trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The team that owns a new model (default: the caller's team; only admins name another).
    /// For an existing model it must be the model's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default)]
    pub manifest: ManifestPatch,
}

/// Checks a patch, including that every Plinth dataset version it names is registered, and
/// returns the version tags it sets.
pub async fn patch_tags(store: &Store, patch: &ManifestPatch) -> LResult<Vec<KeyValue>> {
    let tags = patch
        .to_tags()
        .map_err(|e| LifecycleError::invalid(format!("manifest.{e}")))?;
    for (i, d) in patch.datasets.iter().flatten().enumerate() {
        if let Some((c, n)) = plinth_dataset_version(d)
            && store
                .get_object(DATASET_VERSION_KIND, &format!("{c}-v{n}"))
                .await?
                .is_none()
        {
            return Err(LifecycleError::invalid(format!(
                "manifest.datasets[{i}]: {d} is not a registered dataset version \
                 (see plinth dataset list {c})"
            )));
        }
    }
    Ok(tags)
}

/// Registers a new version of `model` (creating the model when new) with its typed fields,
/// and writes it into the lineage graph.
pub async fn register(
    store: &Store,
    who: &Identity,
    model: &str,
    req: &RegisterRequest,
) -> LResult<ModelVersion> {
    require(who, Role::Member, "register model versions")?;
    if model.trim().is_empty() || model.len() > 250 {
        return Err(LifecycleError::invalid("name: must be 1 to 250 characters"));
    }
    if req.source.trim().is_empty() {
        return Err(LifecycleError::invalid("source: must not be empty"));
    }
    let tags = patch_tags(store, &req.manifest).await?;
    let run_id = req.run_id.clone().unwrap_or_default();
    if !run_id.is_empty() {
        store.get_run(&run_id).await.map_err(|e| match e {
            StoreError::NotFound(m) => LifecycleError::invalid(format!("runId: {m}")),
            e => e.into(),
        })?;
    }
    match store.get_registered_model(model).await {
        Ok(m) => {
            let team = team_of_tags(&m.tags);
            if let (Some(want), Some(have)) = (req.team.as_deref(), team.as_deref())
                && want.trim() != have
            {
                return Err(LifecycleError::invalid(format!(
                    "team: model {model:?} belongs to team {have}, not {want:?}"
                )));
            }
            authorize_model(store, who, model, Role::Member, "register versions").await?;
        }
        Err(StoreError::NotFound(_)) => {
            let team = team_for_new_model(store, who, req.team.as_deref()).await?;
            let tags: Vec<KeyValue> = team
                .map(|t| KeyValue::new(TAG_TEAM, t))
                .into_iter()
                .collect();
            match store
                .create_registered_model(model, "", &tags, &who.name, now_ms())
                .await
            {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    let mv = store
        .create_model_version(
            &NewModelVersion {
                name: model.to_string(),
                source: req.source.trim().to_string(),
                run_id,
                run_link: String::new(),
                description: req.description.clone().unwrap_or_default(),
                user_id: who.name.clone(),
                tags,
            },
            now_ms(),
        )
        .await?;
    record_lineage(store, &mv).await;
    Ok(mv)
}

/// Sets typed fields of a version (absent fields are kept) and updates its lineage.
pub async fn set_manifest(
    store: &Store,
    who: &Identity,
    model: &str,
    ver: &str,
    patch: &ManifestPatch,
) -> LResult<ModelVersion> {
    require(who, Role::Member, "change model versions")?;
    authorize_model(store, who, model, Role::Member, "change versions").await?;
    let tags = patch_tags(store, patch).await?;
    if tags.is_empty() {
        return Err(LifecycleError::invalid(
            "the body sets no field: send codeCommit, datasets, features, prompts, \
             hyperparameters, evalSets, evalMetrics or deployment",
        ));
    }
    store.set_model_version_tags(model, ver, &tags).await?;
    let mv = version(store, model, ver).await?;
    record_lineage(store, &mv).await;
    Ok(mv)
}

/// A version with its typed fields and lifecycle state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub name: String,
    pub version: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// Who registered it (the token's name).
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// MLflow's stage: None, Staging, Production, Archived.
    pub mlflow_stage: String,
    pub aliases: Vec<String>,
    /// The promotion targets it holds (`staging`, `canary`, `production`).
    pub stages: Vec<String>,
    pub manifest: Manifest,
    pub approvals: Vec<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Deprecation>,
    /// `model:NAME@VERSION`, its node in the lineage graph.
    pub lineage_node: String,
}

pub async fn version_view(store: &Store, lc: &Lifecycle, mv: ModelVersion) -> VersionView {
    let manifest = manifest_of(store, &mv).await;
    VersionView {
        stages: lc
            .spec
            .stages
            .iter()
            .filter(|(_, v)| **v == mv.version)
            .map(|(t, _)| t.clone())
            .collect(),
        approvals: lc
            .spec
            .approvals
            .get(&mv.version)
            .cloned()
            .unwrap_or_default(),
        deprecation: lc.spec.deprecations.get(&mv.version).cloned(),
        lineage_node: NodeRef::model(&mv.name, &mv.version).key(),
        manifest,
        name: mv.name,
        version: mv.version,
        source: mv.source,
        run_id: mv.run_id,
        author: mv.user_id,
        description: mv.description,
        created_at: mv.creation_timestamp,
        mlflow_stage: mv.current_stage,
        aliases: mv.aliases,
    }
}

/// One version, with lifecycle state.
pub async fn get_version(store: &Store, model: &str, ver: &str) -> LResult<VersionView> {
    let mv = version(store, model, ver).await?;
    let lc = load(store, model).await?;
    Ok(version_view(store, &lc, mv).await)
}

/// A registered model with its lifecycle and versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelView {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The team that owns it (its maintainers, or admins, promote, approve, roll back and
    /// deprecate); none for a model without a team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The lifecycle's generation (0 before the first promotion, approval or deprecation);
    /// `expectedGeneration` of a promotion compares against it.
    pub generation: i64,
    /// Promotion target to version.
    pub stages: BTreeMap<String, String>,
    /// Earlier production versions, oldest first.
    pub production_history: Vec<String>,
    /// The ReleasePolicy that gates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Newest first.
    pub versions: Vec<VersionView>,
}

pub async fn get_model(store: &Store, model: &str) -> LResult<ModelView> {
    let m = store.get_registered_model(model).await?;
    let lc = load(store, model).await?;
    let mut versions = Vec::new();
    for mv in store.list_model_versions(model).await? {
        versions.push(version_view(store, &lc, mv).await);
    }
    Ok(ModelView {
        team: team_of_tags(&m.tags),
        name: m.name,
        description: m.description,
        generation: lc.generation,
        stages: lc.spec.stages.clone(),
        production_history: lc.spec.production_history.clone(),
        policy: policy_for(store, model).await?.map(|(n, _)| n),
        versions,
    })
}

/// One line per model in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSummary {
    pub name: String,
    /// The team that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub latest_version: Option<String>,
    pub stages: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

/// Every registered model (at most 1,000), by name.
pub async fn list_models(store: &Store) -> LResult<Vec<ModelSummary>> {
    let page = store
        .search_registered_models(&RegistrySearch {
            filter: Vec::new(),
            max_results: 1000,
            page_token: None,
        })
        .await?;
    let mut out = Vec::new();
    for m in page.items {
        let lc = load(store, &m.name).await?;
        out.push(ModelSummary {
            team: team_of_tags(&m.tags),
            latest_version: m
                .latest_versions
                .iter()
                .filter_map(|v| v.version.parse::<i64>().ok())
                .max()
                .map(|v| v.to_string()),
            stages: lc.spec.stages,
            updated_at: m.last_updated_timestamp,
            name: m.name,
        });
    }
    Ok(out)
}

/// `GET /api/v1/models/{name}/diff` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffView {
    pub model: String,
    pub a: String,
    pub b: String,
    pub changes: Vec<FieldChange>,
}

pub async fn diff_versions(store: &Store, model: &str, a: &str, b: &str) -> LResult<DiffView> {
    let ma = manifest_of(store, &version(store, model, a).await?).await;
    let mb = manifest_of(store, &version(store, model, b).await?).await;
    Ok(DiffView {
        model: model.to_string(),
        a: a.to_string(),
        b: b.to_string(),
        changes: diff(&ma, &mb),
    })
}

// ---------------------------------------------------------------------------------------------
// Lineage

/// An MLflow run id (32 hex digits) as the UUID OpenLineage run nodes use.
fn run_uuid(run_id: &str) -> Option<String> {
    uuid::Uuid::parse_str(run_id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// A dataset entry as a lineage node: a Plinth dataset version is the data file it was
/// registered from (whose node carries its contract status); a URI is split into OpenLineage's
/// namespace and name.
async fn dataset_node(store: &Store, d: &str) -> Option<NodeRef> {
    if let Some((contract, n)) = plinth_dataset_version(d) {
        let o = store
            .get_object(DATASET_VERSION_KIND, &format!("{contract}-v{n}"))
            .await
            .ok()??;
        let path = o.document.spec.get("path")?.as_str()?.to_string();
        let abs = std::path::absolute(&path)
            .map(|p| p.display().to_string())
            .unwrap_or(path);
        return Some(NodeRef::dataset("file", &abs));
    }
    if let Some(path) = d
        .strip_prefix("file://")
        .or_else(|| d.strip_prefix("file:"))
    {
        return Some(NodeRef::dataset("file", path));
    }
    if d.starts_with('/') {
        return Some(NodeRef::dataset("file", d));
    }
    let (scheme, rest) = d.split_once("://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if path.is_empty() {
        return Some(NodeRef::dataset(&format!("{scheme}://{authority}"), "/"));
    }
    Some(NodeRef::dataset(&format!("{scheme}://{authority}"), path))
}

/// Writes `model:NAME@VERSION` with edges from its training run (and that run's experiment as
/// the job) and its dataset versions. Failures are logged: the version is already stored.
pub async fn record_lineage(store: &Store, mv: &ModelVersion) {
    let manifest = manifest_of(store, mv).await;
    let at = now_text();
    let model = NodeRef::model(&mv.name, &mv.version);
    let mut w = LineageWrite::default();
    let mut facets = Map::new();
    facets.insert(
        "plinthModel".into(),
        json!({
            "_producer": PRODUCER,
            "_schemaURL": "urn:plinth:facets:PlinthModelFacet",
            "name": mv.name, "version": mv.version, "source": mv.source,
            "runId": mv.run_id, "registeredBy": mv.user_id,
            "codeCommit": manifest.code_commit, "datasets": manifest.datasets,
        }),
    );
    w.nodes.push(NodeUpdate {
        node: model.clone(),
        facets,
        seen_at: at.clone(),
    });
    let mut hub = model.clone();
    if let Some(rid) = run_uuid(&mv.run_id)
        && let Ok(run) = store.get_run(&mv.run_id).await
    {
        let run_node = NodeRef::run(&rid);
        let mut facets = Map::new();
        facets.insert(
            "plinthMlflowRun".into(),
            json!({
                "_producer": PRODUCER,
                "_schemaURL": "urn:plinth:facets:PlinthMlflowRunFacet",
                "runId": run.info.run_id, "experimentId": run.info.experiment_id,
                "runName": run.info.run_name, "status": run.info.status,
                "codeCommit": manifest.code_commit, "params": manifest.hyperparameters,
            }),
        );
        w.nodes.push(NodeUpdate {
            node: run_node.clone(),
            facets,
            seen_at: at.clone(),
        });
        w.edges.push(EdgeUpdate {
            from: run_node.clone(),
            to: model.clone(),
            kind: EdgeKind::Output,
        });
        let job_name = store
            .get_experiment(&run.info.experiment_id)
            .await
            .map(|e| e.name)
            .unwrap_or_else(|_| run.info.experiment_id.clone());
        let job = NodeRef::job("mlflow", &job_name);
        w.nodes.push(NodeUpdate {
            node: job.clone(),
            facets: Map::new(),
            seen_at: at.clone(),
        });
        w.edges.push(EdgeUpdate {
            from: job,
            to: run_node.clone(),
            kind: EdgeKind::Job,
        });
        hub = run_node;
    }
    for d in &manifest.datasets {
        let Some(node) = dataset_node(store, d).await else {
            continue;
        };
        w.nodes.push(NodeUpdate {
            node: node.clone(),
            facets: Map::new(),
            seen_at: at.clone(),
        });
        w.edges.push(EdgeUpdate {
            from: node,
            to: hub.clone(),
            kind: EdgeKind::Input,
        });
    }
    if let Err(e) = store.record_lineage(&w).await {
        tracing::warn!(model = %mv.name, version = %mv.version, error = %e, "could not add a model version to the lineage graph");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn manifest(metrics: &[(&str, f64)]) -> Manifest {
        Manifest {
            eval_metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Manifest::default()
        }
    }

    #[test]
    fn metric_gates_compare_absolute_and_relative_to_production() {
        let g = MetricGate {
            metric: "auc".into(),
            min: Some(0.8),
            max: None,
            min_delta_vs_production: Some(-0.01),
            max_delta_vs_production: None,
        };
        let prod = manifest(&[("auc", 0.86)]);
        // (candidate, production, expected verdicts)
        type Case<'a> = (Manifest, Option<(&'a str, &'a Manifest)>, Vec<bool>);
        let cases: Vec<Case> = vec![
            (
                manifest(&[("auc", 0.85)]),
                Some(("1", &prod)),
                vec![true, true],
            ),
            (
                manifest(&[("auc", 0.84)]),
                Some(("1", &prod)),
                vec![true, false],
            ),
            (manifest(&[("auc", 0.79)]), None, vec![false, true]),
            (manifest(&[]), Some(("1", &prod)), vec![false, false]),
        ];
        for (m, p, want) in cases {
            let mut out = Vec::new();
            metric_verdicts(&g, &m, p, &mut out);
            let got: Vec<bool> = out.iter().map(|v| v.passed).collect();
            assert_eq!(got, want, "{out:?}");
        }
        let mut out = Vec::new();
        metric_verdicts(
            &g,
            &manifest(&[("auc", 0.84)]),
            Some(("1", &prod)),
            &mut out,
        );
        assert_eq!(
            out[1].line(),
            "FAIL metric auc - production >= -0.01: auc = 0.84 vs 0.86 in production version 1 (difference -0.02)"
        );
    }

    #[test]
    fn budgets_fail_when_over_or_missing() {
        let m = manifest(&[("latency_p95_ms", 120.0)]);
        assert!(budget_verdict("latency", "latency_p95_ms", 150.0, " ms", &m).passed);
        assert!(!budget_verdict("latency", "latency_p95_ms", 100.0, " ms", &m).passed);
        assert!(!budget_verdict("cost", "cost_per_1k_inferences", 1.0, "", &m).passed);
    }

    #[test]
    fn a_models_team_decides_who_sees_it() {
        let who = |team: Option<&str>, role: Role| Identity {
            token_id: "t".into(),
            name: "n".into(),
            team: team.map(str::to_string),
            role,
        };
        let tags = vec![KeyValue::new("x", "y"), KeyValue::new(TAG_TEAM, " team-a ")];
        assert_eq!(team_of_tags(&tags).as_deref(), Some("team-a"));
        assert_eq!(team_of_tags(&[KeyValue::new(TAG_TEAM, "")]), None);
        // (identity, model team, may read)
        for (w, team, want) in [
            (who(Some("team-a"), Role::Viewer), Some("team-a"), true),
            (who(Some("team-b"), Role::Maintainer), Some("team-a"), false),
            (who(None, Role::Admin), Some("team-a"), true),
            (who(Some("team-b"), Role::Viewer), None, true),
        ] {
            assert_eq!(may_read(&w, team), want, "{w:?} {team:?}");
        }
        assert!(check_model_tag(&who(Some("team-a"), Role::Maintainer), TAG_TEAM).is_err());
        assert!(check_model_tag(&who(None, Role::Admin), TAG_TEAM).is_ok());
        assert!(check_model_tag(&who(Some("team-a"), Role::Member), "owner").is_ok());
    }

    #[test]
    fn targets_and_run_ids() {
        assert_eq!(parse_target("Production").unwrap(), "production");
        assert!(parse_target("prod").is_err());
        assert_eq!(
            run_uuid("0190d2a0111170008000000000000001").as_deref(),
            Some("0190d2a0-1111-7000-8000-000000000001")
        );
        assert_eq!(run_uuid("nope"), None);
    }
}
