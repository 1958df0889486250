//! The `Deployment` resource: which model versions serve an OpenAI `model` name, how traffic is
//! split between them, where their upstreams are, and the cache, limits and canary policy.
//! Unknown fields are errors; [`validate_deployments`] names the field that is wrong.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether a version is the stable one or the canary being evaluated against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionRole {
    #[default]
    Stable,
    Canary,
}

/// One model version of a deployment and the upstream endpoints that serve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionSpec {
    /// Version name, unique within the deployment (e.g. `v1`).
    pub name: String,
    /// `stable` (default) or `canary`. At most one canary per deployment.
    #[serde(default)]
    pub role: VersionRole,
    /// Relative traffic weight (0–1,000,000). Weights of a deployment need not sum to 100.
    pub weight: u32,
    /// Base URLs of OpenAI-compatible servers (`http://host:port`, no `/v1`); the gateway
    /// appends the request path. Several URLs are used round-robin.
    pub upstreams: Vec<String>,
    /// Model name sent upstream in the `model` field; default: the name the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Per-attempt timeout in milliseconds: until the whole response for plain requests, until
    /// the headers and then between chunks for streams. Default 30,000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts on this version (next upstream, round-robin) before falling back.
    #[serde(default)]
    pub retries: u32,
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// Where the key for sticky routing comes from. Requests without the key are split at random.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", tag = "from", deny_unknown_fields)]
pub enum Stickiness {
    /// A request header, e.g. `x-session-id`.
    Header { name: String },
    /// The OpenAI `user` field of the request body.
    User,
}

/// Exact-match response cache for non-streaming requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheSpec {
    /// Seconds an entry is served (at least 1).
    pub ttl_seconds: u64,
    /// Bytes of keys and bodies kept; the oldest entries are evicted first (at least 1).
    pub max_bytes: u64,
}

/// Who a limit counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Every key of the caller's team together.
    Team,
    /// Each API key on its own.
    Key,
}

/// What a deployment's tokens cost, for spend limits and the cost per request in usage records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingSpec {
    /// Price of 1,000 input (prompt) tokens.
    pub input_per_1k_tokens: f64,
    /// Price of 1,000 output (completion) tokens.
    pub output_per_1k_tokens: f64,
    /// ISO 4217 code of the prices (default USD).
    #[serde(default = "default_currency")]
    pub currency: String,
}

fn default_currency() -> String {
    "USD".to_owned()
}

impl PricingSpec {
    /// What `tokens_in` input and `tokens_out` output tokens cost.
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.input_per_1k_tokens
            + tokens_out as f64 * self.output_per_1k_tokens)
            / 1000.0
    }
}

/// A fixed-window limit on requests, tokens and/or spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitSpec {
    pub scope: LimitScope,
    /// Window length in seconds (at least 1).
    pub window_seconds: u64,
    /// Requests admitted per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Tokens (in + out, as reported by the upstream) per window; a request is refused once the
    /// window's tokens reached the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Spend per window in the deployment's `pricing` currency (tokens reported by the upstream
    /// at its prices); a request is refused once the window's spend reached the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<f64>,
}

/// When the canary is rolled back automatically (its weight becomes 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryPolicy {
    /// Sliding window, seconds, over which both versions are compared.
    pub window_seconds: u64,
    /// Requests the canary must have seen in the window before it can be judged.
    pub min_requests: u64,
    /// Roll back when canary error rate − stable error rate exceeds this (0.0–1.0).
    pub max_error_rate_margin: f64,
    /// Roll back when canary p95 latency − stable p95 latency exceeds this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p95_latency_margin_ms: Option<f64>,
}

/// A deployment: OpenAI model names it serves, its versions and policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Unique name; `POST /v1/deployments/{name}/predict` addresses it.
    pub name: String,
    /// Values of the OpenAI `model` field routed to this deployment (unique across deployments).
    #[serde(default)]
    pub models: Vec<String>,
    pub versions: Vec<VersionSpec>,
    /// Sticky split: the same key always goes to the same version (while weights are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<Stickiness>,
    /// Deployments tried in order when every version of this one failed (5xx, timeout,
    /// connection error). Fallbacks are not chained further.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    #[serde(default)]
    pub limits: Vec<LimitSpec>,
    /// Token prices: spend limits count with them, usage records carry each request's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPolicy>,
    /// Upstream path for `predict` requests (plain JSON model servers). Default `/predict`.
    #[serde(default = "default_predict_path")]
    pub predict_path: String,
}

fn default_predict_path() -> String {
    "/predict".to_owned()
}

/// A file of deployments, as read by [`parse_deployments_yaml`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentsFile {
    pub deployments: Vec<DeploymentSpec>,
}

/// A deployment spec that is not valid; `field` is a path such as `deployments[0].versions[1].weight`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

const MAX_WEIGHT: u32 = 1_000_000;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_upstream(field: &str, url: &str) -> Result<(), SpecError> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| SpecError::new(field, format!("`{url}` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(SpecError::new(
                field,
                format!("`{url}`: https upstreams are not supported yet; use http"),
            ));
        }
        _ => {
            return Err(SpecError::new(
                field,
                format!("`{url}` must start with http://"),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(SpecError::new(field, format!("`{url}` has no host")));
    }
    if uri.query().is_some() {
        return Err(SpecError::new(
            field,
            format!("`{url}` must not have a query"),
        ));
    }
    Ok(())
}

impl DeploymentSpec {
    /// Checks this deployment on its own; `at` prefixes the field paths in errors.
    pub fn validate(&self, at: &str) -> Result<(), SpecError> {
        if !valid_name(&self.name) {
            return Err(SpecError::new(
                format!("{at}.name"),
                format!(
                    "`{}` must be 1-128 characters of letters, digits, '-', '_' or '.'",
                    self.name
                ),
            ));
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.trim().is_empty() {
                return Err(SpecError::new(
                    format!("{at}.models[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if self.versions.is_empty() {
            return Err(SpecError::new(
                format!("{at}.versions"),
                "needs at least one version",
            ));
        }
        let mut canaries = 0;
        let mut stable_weight = 0u64;
        for (i, v) in self.versions.iter().enumerate() {
            let vat = format!("{at}.versions[{i}]");
            if !valid_name(&v.name) {
                return Err(SpecError::new(
                    format!("{vat}.name"),
                    format!(
                        "`{}` must be 1-128 characters of letters, digits, '-', '_' or '.'",
                        v.name
                    ),
                ));
            }
            if self.versions[..i].iter().any(|o| o.name == v.name) {
                return Err(SpecError::new(
                    format!("{vat}.name"),
                    format!("version `{}` appears twice", v.name),
                ));
            }
            if v.weight > MAX_WEIGHT {
                return Err(SpecError::new(
                    format!("{vat}.weight"),
                    format!("{} is above the maximum {MAX_WEIGHT}", v.weight),
                ));
            }
            if v.upstreams.is_empty() {
                return Err(SpecError::new(
                    format!("{vat}.upstreams"),
                    "needs at least one upstream URL",
                ));
            }
            for (j, u) in v.upstreams.iter().enumerate() {
                check_upstream(&format!("{vat}.upstreams[{j}]"), u)?;
            }
            if v.timeout_ms == 0 || v.timeout_ms > 3_600_000 {
                return Err(SpecError::new(
                    format!("{vat}.timeoutMs"),
                    format!("{} must be between 1 and 3600000", v.timeout_ms),
                ));
            }
            if v.retries > 10 {
                return Err(SpecError::new(
                    format!("{vat}.retries"),
                    format!("{} is above the maximum 10", v.retries),
                ));
            }
            match v.role {
                VersionRole::Canary => canaries += 1,
                VersionRole::Stable => stable_weight += u64::from(v.weight),
            }
        }
        if canaries > 1 {
            return Err(SpecError::new(
                format!("{at}.versions"),
                "at most one version may have role `canary`",
            ));
        }
        if stable_weight == 0 {
            return Err(SpecError::new(
                format!("{at}.versions"),
                "needs a `stable` version with a weight above 0",
            ));
        }
        if let Some(Stickiness::Header { name }) = &self.stickiness
            && axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(SpecError::new(
                format!("{at}.stickiness.name"),
                format!("`{name}` is not a valid header name"),
            ));
        }
        if let Some(c) = &self.cache {
            if c.ttl_seconds == 0 {
                return Err(SpecError::new(
                    format!("{at}.cache.ttlSeconds"),
                    "must be at least 1",
                ));
            }
            if c.max_bytes == 0 {
                return Err(SpecError::new(
                    format!("{at}.cache.maxBytes"),
                    "must be at least 1",
                ));
            }
        }
        for (i, l) in self.limits.iter().enumerate() {
            let lat = format!("{at}.limits[{i}]");
            if l.window_seconds == 0 {
                return Err(SpecError::new(
                    format!("{lat}.windowSeconds"),
                    "must be at least 1",
                ));
            }
            if l.requests.is_none() && l.tokens.is_none() && l.spend.is_none() {
                return Err(SpecError::new(
                    lat,
                    "needs `requests`, `tokens` and/or `spend`",
                ));
            }
            if let Some(s) = l.spend {
                if !(s.is_finite() && s > 0.0) {
                    return Err(SpecError::new(
                        format!("{lat}.spend"),
                        format!("{s} must be a number above 0"),
                    ));
                }
                if self.pricing.is_none() {
                    return Err(SpecError::new(
                        format!("{lat}.spend"),
                        "a spend limit needs the deployment's `pricing`",
                    ));
                }
            }
        }
        if let Some(p) = &self.pricing {
            for (name, v) in [
                ("inputPer1kTokens", p.input_per_1k_tokens),
                ("outputPer1kTokens", p.output_per_1k_tokens),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(SpecError::new(
                        format!("{at}.pricing.{name}"),
                        format!("{v} must be a number of at least 0"),
                    ));
                }
            }
            if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(SpecError::new(
                    format!("{at}.pricing.currency"),
                    format!("`{}` is not an ISO 4217 code such as USD", p.currency),
                ));
            }
        }
        if let Some(p) = &self.canary {
            if canaries == 0 {
                return Err(SpecError::new(
                    format!("{at}.canary"),
                    "a canary policy needs a version with role `canary`",
                ));
            }
            if p.window_seconds == 0 {
                return Err(SpecError::new(
                    format!("{at}.canary.windowSeconds"),
                    "must be at least 1",
                ));
            }
            if p.min_requests == 0 {
                return Err(SpecError::new(
                    format!("{at}.canary.minRequests"),
                    "must be at least 1",
                ));
            }
            if !(0.0..=1.0).contains(&p.max_error_rate_margin) {
                return Err(SpecError::new(
                    format!("{at}.canary.maxErrorRateMargin"),
                    format!("{} must be between 0.0 and 1.0", p.max_error_rate_margin),
                ));
            }
            if let Some(ms) = p.max_p95_latency_margin_ms
                && !(ms.is_finite() && ms >= 0.0)
            {
                return Err(SpecError::new(
                    format!("{at}.canary.maxP95LatencyMarginMs"),
                    format!("{ms} must be a non-negative number"),
                ));
            }
        }
        if !self.predict_path.starts_with('/') {
            return Err(SpecError::new(
                format!("{at}.predictPath"),
                format!("`{}` must start with '/'", self.predict_path),
            ));
        }
        Ok(())
    }
}

/// Checks every deployment and the references between them: unique names, unique model names,
/// fallbacks that name another existing deployment.
pub fn validate_deployments(deployments: &[DeploymentSpec]) -> Result<(), SpecError> {
    for (i, d) in deployments.iter().enumerate() {
        let at = format!("deployments[{i}]");
        d.validate(&at)?;
        if deployments[..i].iter().any(|o| o.name == d.name) {
            return Err(SpecError::new(
                format!("{at}.name"),
                format!("deployment `{}` appears twice", d.name),
            ));
        }
        for (j, m) in d.models.iter().enumerate() {
            if let Some(o) = deployments[..i].iter().find(|o| o.models.contains(m)) {
                return Err(SpecError::new(
                    format!("{at}.models[{j}]"),
                    format!("model `{m}` is already served by deployment `{}`", o.name),
                ));
            }
            if d.models[..j].contains(m) {
                return Err(SpecError::new(
                    format!("{at}.models[{j}]"),
                    format!("model `{m}` appears twice"),
                ));
            }
        }
        for (j, f) in d.fallbacks.iter().enumerate() {
            if f == &d.name {
                return Err(SpecError::new(
                    format!("{at}.fallbacks[{j}]"),
                    "a deployment cannot fall back to itself",
                ));
            }
            if !deployments.iter().any(|o| &o.name == f) {
                return Err(SpecError::new(
                    format!("{at}.fallbacks[{j}]"),
                    format!("no deployment named `{f}`"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses and validates a YAML file of the form `deployments: [...]`. Errors name the field.
pub fn parse_deployments_yaml(text: &str) -> Result<Vec<DeploymentSpec>, SpecError> {
    let de = yaml_serde::Deserializer::from_str(text);
    let file: DeploymentsFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        SpecError::new(
            if path == "." {
                "deployments".to_owned()
            } else {
                path
            },
            e.inner().to_string(),
        )
    })?;
    validate_deployments(&file.deployments)?;
    Ok(file.deployments)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
deployments:
  - name: chat
    models: [gpt-4o-mini]
    versions:
      - name: v1
        weight: 90
        upstreams: ["http://127.0.0.1:9000"]
      - name: v2
        role: canary
        weight: 10
        upstreams: ["http://127.0.0.1:9001"]
        timeoutMs: 500
        retries: 1
    stickiness: { from: header, name: x-session-id }
    fallbacks: [backup]
    cache: { ttlSeconds: 60, maxBytes: 1000000 }
    limits:
      - { scope: team, windowSeconds: 60, requests: 100 }
    canary: { windowSeconds: 60, minRequests: 20, maxErrorRateMargin: 0.05 }
  - name: backup
    models: [backup-model]
    versions:
      - { name: v1, weight: 1, upstreams: ["http://127.0.0.1:9002"] }
"#;

    #[test]
    fn parses_a_full_file() {
        let d = parse_deployments_yaml(GOOD).expect("valid file");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].versions[1].role, VersionRole::Canary);
        assert_eq!(d[0].versions[1].timeout_ms, 500);
        assert_eq!(d[0].versions[0].timeout_ms, 30_000);
        assert_eq!(
            d[0].stickiness,
            Some(Stickiness::Header {
                name: "x-session-id".into()
            })
        );
        assert_eq!(d[0].predict_path, "/predict");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("weight: 90", "weight: 9000000"),
                "deployments[0].versions[0].weight",
            ),
            (
                GOOD.replace("fallbacks: [backup]", "fallbacks: [nope]"),
                "deployments[0].fallbacks[0]",
            ),
            (
                GOOD.replace("models: [backup-model]", "models: [gpt-4o-mini]"),
                "deployments[1].models[0]",
            ),
            (
                GOOD.replace("\"http://127.0.0.1:9001\"", "\"ftp://x\""),
                "deployments[0].versions[1].upstreams[0]",
            ),
            (
                GOOD.replace("ttlSeconds: 60", "ttlSeconds: 0"),
                "deployments[0].cache.ttlSeconds",
            ),
            (
                GOOD.replace("maxErrorRateMargin: 0.05", "maxErrorRateMargin: 2"),
                "deployments[0].canary.maxErrorRateMargin",
            ),
            (
                GOOD.replace("role: canary", "role: canary\n        colour: red"),
                "deployments[0].versions[1]",
            ),
        ];
        for (text, field) in cases {
            let e = parse_deployments_yaml(&text).expect_err(field);
            assert!(
                e.field.starts_with(field),
                "expected field {field}, got {e}"
            );
        }
    }

    #[test]
    fn a_deployment_needs_stable_weight() {
        let text = GOOD.replace("weight: 90", "weight: 0");
        let e = parse_deployments_yaml(&text).expect_err("no stable weight");
        assert_eq!(e.field, "deployments[0].versions");
    }
}
