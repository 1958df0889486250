//! Request handling: authenticate, parse, limit, pick a version, serve from cache or proxy with
//! timeouts, retries and fallbacks, stream responses through, and meter the result.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use serde_json::Value;

use crate::auth::Identity;
use crate::cache::{Cached, cache_key};
use crate::error::OpenAiError;
use crate::metrics::{CacheLabels, DeploymentLabels, HandleKey, RequestLabels, RequestSample};
use crate::spec::{Stickiness, VersionRole};
use crate::usage::UsageRecord;
use crate::{Deployment, Gateway, Inner, Version, join_uri};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Chat,
    Completions,
    Embeddings,
    Predict,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Chat => "chat",
            Op::Completions => "text_completion",
            Op::Embeddings => "embeddings",
            Op::Predict => "predict",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Op::Chat => "/v1/chat/completions",
            Op::Completions => "/v1/completions",
            Op::Embeddings => "/v1/embeddings",
            Op::Predict => "",
        }
    }
}

pub(crate) async fn chat(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    gw.handle(Op::Chat, None, headers, body).await
}

pub(crate) async fn completions(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    gw.handle(Op::Completions, None, headers, body).await
}

pub(crate) async fn embeddings(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    gw.handle(Op::Embeddings, None, headers, body).await
}

pub(crate) async fn predict(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    gw.handle(Op::Predict, Some(name), headers, body).await
}

pub(crate) async fn models(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(e) = gw.identify(&headers).await {
        return e.into_response();
    }
    let cfg = gw.snapshot();
    let mut data = Vec::new();
    for d in &cfg.deployments {
        for m in &d.spec.models {
            data.push(serde_json::json!({
                "id": m, "object": "model", "created": 0, "owned_by": "plinth",
            }));
        }
    }
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub(crate) async fn metrics(State(gw): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics_text(),
    )
        .into_response()
}

pub(crate) async fn not_found(req: Request<Body>) -> Response {
    OpenAiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    OpenAiError::method_not_allowed().into_response()
}

pub(crate) fn random_u64() -> u64 {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    STATE.get_or_init(RandomState::new).hash_one(n)
}

fn sticky_hash(deployment: &str, key: &str) -> u64 {
    // SipHash with fixed keys: the same key maps to the same version across restarts.
    let mut h = std::hash::DefaultHasher::new();
    deployment.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Index of the version `r` selects by effective weight (falls back to the first stable one).
fn pick(dep: &Deployment, r: u64) -> usize {
    let total: u64 = dep
        .versions
        .iter()
        .map(|v| u64::from(dep.effective_weight(v)))
        .sum();
    if total > 0 {
        let mut x = r % total;
        for (i, v) in dep.versions.iter().enumerate() {
            let w = u64::from(dep.effective_weight(v));
            if x < w {
                return i;
            }
            x -= w;
        }
    }
    dep.versions
        .iter()
        .position(|v| v.role == VersionRole::Stable)
        .unwrap_or(0)
}

/// The versions to try, in order: the chosen one, the other live versions of the deployment
/// (stable first), then each fallback deployment the same way.
fn plan(cfg: &crate::Config, dep: &Arc<Deployment>, r: u64) -> Vec<(Arc<Deployment>, usize)> {
    let mut out = Vec::new();
    let mut add = |d: &Arc<Deployment>| {
        let first = pick(d, r);
        out.push((Arc::clone(d), first));
        let mut rest: Vec<usize> = (0..d.versions.len())
            .filter(|&i| i != first && d.effective_weight(&d.versions[i]) > 0)
            .collect();
        rest.sort_by_key(|&i| d.versions[i].role != VersionRole::Stable);
        for i in rest {
            out.push((Arc::clone(d), i));
        }
    };
    add(dep);
    for f in &dep.spec.fallbacks {
        if let Some(fd) = cfg.by_name(f) {
            add(fd);
        }
    }
    out
}

fn wants_no_cache(headers: &HeaderMap) -> bool {
    let bypass = headers
        .get(&X_PLINTH_CACHE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("bypass"));
    let no_cache = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|d| {
                matches!(
                    d.trim().to_ascii_lowercase().as_str(),
                    "no-cache" | "no-store"
                )
            })
        });
    bypass || no_cache
}

/// Token counts from an OpenAI `usage` object.
/// What the gateway reads of an upstream's JSON answer: its `model` and the token counts of its
/// `usage`.
#[derive(Debug, Default)]
struct AnswerFields {
    model: Option<String>,
    tokens: Option<(u64, u64)>,
}

/// The top level of an answer, every other field skipped unread. Fields of an unexpected type
/// are read as `Value` so they never make a valid JSON answer fail.
#[derive(serde::Deserialize)]
struct AnswerHead {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
}

/// An OpenAI answer's top level as it usually is: a string `model` (borrowed where it has no
/// escapes) and a `usage` object of counts. Anything else falls back to [`AnswerHead`].
#[derive(serde::Deserialize)]
struct TypedAnswerHead<'a> {
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    usage: Option<TypedUsage>,
}

#[derive(serde::Deserialize)]
struct TypedUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Whether `raw` is a JSON object, by its first byte that is not white space.
fn starts_object(raw: &[u8]) -> bool {
    raw.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// Parses a 2xx answer once: `None` when it is not JSON at all. An answer that is JSON but not
/// an object (a plain model server's list, a number) has no fields. The answer's `model` is
/// only kept when `want_model`.
fn answer_fields(body: &[u8], want_model: bool) -> Option<AnswerFields> {
    let no_fields = || {
        serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .ok()
            .map(|_| AnswerFields::default())
    };
    if !starts_object(body) {
        return no_fields();
    }
    if let Ok(h) = serde_json::from_slice::<TypedAnswerHead>(body) {
        return Some(AnswerFields {
            model: h.model.filter(|_| want_model).map(|m| m.into_owned()),
            tokens: h.usage.map(|u| {
                (
                    u.prompt_tokens.unwrap_or(0),
                    u.completion_tokens.unwrap_or(0),
                )
            }),
        });
    }
    match serde_json::from_slice::<AnswerHead>(body) {
        Ok(h) => Some(AnswerFields {
            model: h
                .model
                .as_ref()
                .and_then(Value::as_str)
                .filter(|_| want_model)
                .map(str::to_owned),
            tokens: h.usage.as_ref().and_then(usage_tokens),
        }),
        Err(_) => no_fields(),
    }
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    usage_tokens(v.get("usage")?)
}

/// `(prompt_tokens, completion_tokens)` of a `usage` object; `None` for a null one.
fn usage_tokens(u: &Value) -> Option<(u64, u64)> {
    if u.is_null() {
        return None;
    }
    let input = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    let output = u
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some((input, output))
}

/// What the gateway routes an OpenAI request on: its `model`, whether it asks for a stream, and
/// its `user` (for stickiness by user).
#[derive(Debug, Default, PartialEq)]
struct RequestHead {
    model: String,
    stream: bool,
    user: Option<String>,
}

/// The top level of an OpenAI request as read on the request path: these fields, every other
/// one checked as JSON and skipped unread (the whole document is only built where it is needed:
/// a cache key, a rewritten `model`).
#[derive(serde::Deserialize)]
struct HeadFields {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    user: Option<Value>,
}

impl RequestHead {
    /// Checks the body of an `op` request: valid JSON (any JSON for `predict`), and for the
    /// OpenAI routes an object with a string `model` and a boolean (or null) `stream`.
    fn parse(op: Op, raw: &[u8]) -> Result<RequestHead, OpenAiError> {
        if op == Op::Predict {
            return serde_json::from_slice::<serde::de::IgnoredAny>(raw)
                .map(|_| RequestHead::default())
                .map_err(not_json);
        }
        let parsed = if starts_object(raw) {
            serde_json::from_slice::<HeadFields>(raw).ok()
        } else {
            None
        };
        let fields = match parsed {
            Some(f) => f,
            // Not an object, or an object serde's derive refuses (a repeated key, which JSON
            // allows and whose last value counts): read it whole, as the error needs anyway.
            _ => {
                let Value::Object(mut o) = parse_whole(raw)? else {
                    return Err(OpenAiError::invalid_request(
                        "request body must be a JSON object",
                        None,
                    ));
                };
                HeadFields {
                    model: o.remove("model"),
                    stream: o.remove("stream"),
                    user: o.remove("user"),
                }
            }
        };
        let model = match fields.model {
            Some(Value::String(m)) => m,
            Some(_) => {
                return Err(OpenAiError::invalid_request(
                    "`model` must be a string",
                    Some("model"),
                ));
            }
            None => {
                return Err(OpenAiError::invalid_request(
                    "missing required field `model`",
                    Some("model"),
                ));
            }
        };
        let stream = match fields.stream {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => {
                return Err(OpenAiError::invalid_request(
                    "`stream` must be a boolean",
                    Some("stream"),
                ));
            }
        };
        let user = match fields.user {
            Some(Value::String(u)) => Some(u),
            _ => None,
        };
        Ok(RequestHead {
            model,
            stream,
            user,
        })
    }
}

fn not_json(e: serde_json::Error) -> OpenAiError {
    OpenAiError::invalid_request(format!("request body is not valid JSON: {e}"), None)
}

/// The whole request document.
fn parse_whole(raw: &[u8]) -> Result<Value, OpenAiError> {
    serde_json::from_slice(raw).map_err(not_json)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything measured about one request; recorded (metrics, usage, token limits) on drop, so
/// a request is counted exactly once however it ends, including a client going away mid-stream.
struct RequestRecord {
    inner: Arc<Inner>,
    started: Instant,
    op: Op,
    model: String,
    identity: Option<Identity>,
    deployment: Option<Arc<Deployment>>,
    served_by: String,
    version: String,
    status: u16,
    tokens_in: u64,
    tokens_out: u64,
    total: Option<Duration>,
    upstream: Duration,
    cache_hit: bool,
    fallback_used: bool,
    stream: bool,
    completed: bool,
    /// The replica serving the request (local replicas): held until the request ends.
    lease: Option<crate::replicas::Lease>,
    /// For the OTLP span (only filled when spans are exported): the `traceparent` of the
    /// request, the model the upstream named, and its host and port.
    trace_parent: Option<([u8; 16], [u8; 8])>,
    response_model: Option<String>,
    server: Option<(String, u16)>,
}

impl RequestRecord {
    fn new(inner: Arc<Inner>, op: Op) -> Self {
        inner.metrics.in_flight.inc();
        RequestRecord {
            inner,
            started: Instant::now(),
            op,
            model: String::new(),
            identity: None,
            deployment: None,
            served_by: String::new(),
            version: String::new(),
            status: 0,
            tokens_in: 0,
            tokens_out: 0,
            total: None,
            upstream: Duration::ZERO,
            cache_hit: false,
            fallback_used: false,
            stream: false,
            completed: true,
            lease: None,
            trace_parent: None,
            response_model: None,
            server: None,
        }
    }

    /// Marks the response as ready now (total time is measured up to here).
    fn ready(&mut self, status: u16) {
        self.status = status;
        self.total = Some(self.started.elapsed());
    }

    fn error(&mut self, e: OpenAiError) -> Response {
        self.ready(e.status.as_u16());
        e.into_response()
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let m = &self.inner.metrics;
        m.in_flight.dec();
        let total = self.total.unwrap_or_else(|| self.started.elapsed());
        let dep_name = self
            .deployment
            .as_ref()
            .map(|d| d.spec.name.clone())
            .unwrap_or_default();
        let Some(dep) = &self.deployment else {
            m.requests
                .get_or_create(&RequestLabels {
                    deployment: String::new(),
                    status: self.status.to_string(),
                })
                .inc();
            return;
        };
        let sample = RequestSample {
            operation: self.op.name(),
            model: if self.model.is_empty() {
                &dep_name
            } else {
                &self.model
            },
            deployment: &dep_name,
            version: &self.version,
            status: self.status,
            total_seconds: total.as_secs_f64(),
            overhead_seconds: (!self.cache_hit)
                .then(|| total.saturating_sub(self.upstream).as_secs_f64()),
            fallback: self.fallback_used,
            tokens: (self.tokens_in > 0 || self.tokens_out > 0)
                .then_some((self.tokens_in, self.tokens_out)),
        };
        // Resolved series are cached per deployment, keyed by small numbers; an answer from a
        // fallback deployment's version is recorded without the cache.
        let version = if self.served_by.is_empty() || self.served_by == dep.spec.name {
            if self.version.is_empty() {
                Some(u16::MAX)
            } else {
                dep.versions
                    .iter()
                    .position(|v| v.name == self.version)
                    .and_then(|i| u16::try_from(i).ok())
            }
        } else {
            None
        };
        let model = if self.model.is_empty() {
            Some(u16::MAX)
        } else {
            dep.spec
                .models
                .iter()
                .position(|m| *m == self.model)
                .and_then(|i| u16::try_from(i).ok())
        };
        let key = match (version, model) {
            (Some(version), Some(model)) => Some(HandleKey {
                operation: self.op as u8,
                model,
                version,
                status: self.status,
            }),
            _ => None,
        };
        m.record(&sample, key.map(|k| (&dep.metric_handles, k)));
        let Some(id) = &self.identity else {
            return;
        };
        if !self.cache_hit {
            dep.limiter.add_tokens(id, self.tokens_in, self.tokens_out);
        }
        let cost = match (&dep.spec.pricing, self.cache_hit) {
            (Some(p), false) => p.cost(self.tokens_in, self.tokens_out),
            _ => 0.0,
        };
        if let Some(exporter) = &self.inner.otlp {
            // The span covers the whole request, to the end of a stream.
            let end = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let (trace_id, parent_span_id) = match self.trace_parent {
                Some((t, p)) => (t, Some(p)),
                None => (crate::otlp::random_bytes(), None),
            };
            exporter.export(crate::otlp::SpanData {
                trace_id,
                span_id: crate::otlp::random_bytes(),
                parent_span_id,
                start_unix_nanos: end.saturating_sub(self.started.elapsed().as_nanos() as u64),
                end_unix_nanos: end,
                operation: self.op.name(),
                request_model: self.model.clone(),
                response_model: self.response_model.take(),
                deployment: dep_name.clone(),
                served_by: self.served_by.clone(),
                version: self.version.clone(),
                team: id.team.clone(),
                key_id: id.key_id.clone(),
                status: self.status,
                tokens_in: self.tokens_in,
                tokens_out: self.tokens_out,
                server: self.server.take(),
                cache_hit: self.cache_hit,
                fallback_used: self.fallback_used,
                stream: self.stream,
            });
        }
        self.inner.usage.record(UsageRecord {
            at_unix_ms: unix_ms().saturating_sub(self.started.elapsed().as_millis() as u64),
            team: id.team.clone(),
            key_id: id.key_id.clone(),
            deployment: dep_name,
            served_by: self.served_by.clone(),
            version: self.version.clone(),
            operation: self.op.name(),
            model: self.model.clone(),
            status: self.status,
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost,
            currency: dep
                .spec
                .pricing
                .as_ref()
                .map(|p| p.currency.clone())
                .unwrap_or_default(),
            total_seconds: total.as_secs_f64(),
            upstream_seconds: self.upstream.as_secs_f64(),
            cache_hit: self.cache_hit,
            fallback_used: self.fallback_used,
            stream: self.stream,
            completed: self.completed,
        });
    }
}

/// Why an attempt failed.
enum Failure {
    Timeout(String),
    Other(String),
    /// No local replica could take it (none ready in time, or the queue full).
    Unavailable(String),
}

/// A successful (non-5xx) upstream answer.
enum Answer {
    Full {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        /// What the gateway reads of a 2xx answer (read once, while checking it is JSON).
        fields: Option<AnswerFields>,
    },
    Stream {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Incoming,
        idle: Duration,
    },
}

impl Gateway {
    pub(crate) async fn identify(&self, headers: &HeaderMap) -> Result<Identity, OpenAiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(OpenAiError::unauthenticated(
                "missing API key: send `Authorization: Bearer <key>`",
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                OpenAiError::unauthenticated(
                    "malformed Authorization header: expected `Bearer <key>`",
                )
            })?;
        self.inner
            .auth
            .authenticate(key)
            .await
            .ok_or_else(|| OpenAiError::unauthenticated("incorrect API key provided"))
    }

    async fn read_body<B>(&self, headers: &HeaderMap, body: B) -> Result<Bytes, OpenAiError>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let max = self.inner.options.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(OpenAiError::too_large(max));
        }
        match Limited::new(body, max).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(OpenAiError::too_large(max))
            }
            Err(e) => Err(OpenAiError::invalid_request(
                format!("could not read the request body: {e}"),
                None,
            )),
        }
    }

    pub(crate) async fn handle<B>(
        &self,
        op: Op,
        deployment: Option<String>,
        headers: HeaderMap,
        body: B,
    ) -> Response
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut rec = RequestRecord::new(Arc::clone(&self.inner), op);
        let identity = match self.identify(&headers).await {
            Ok(id) => id,
            Err(e) => return rec.error(e),
        };
        rec.identity = Some(identity.clone());
        if self.inner.otlp.is_some() {
            rec.trace_parent = crate::otlp::parse_traceparent(&headers);
        }
        let raw = match self.read_body(&headers, body).await {
            Ok(b) => b,
            Err(e) => return rec.error(e),
        };
        let head = match RequestHead::parse(op, &raw) {
            Ok(h) => h,
            Err(e) => return rec.error(e),
        };
        let cfg = self.snapshot();
        let dep = if op == Op::Predict {
            let name = deployment.unwrap_or_default();
            match cfg.by_name(&name) {
                Some(d) => Arc::clone(d),
                None => return rec.error(OpenAiError::deployment_not_found(&name)),
            }
        } else {
            rec.model = head.model;
            match cfg.by_model(&rec.model) {
                Some(d) => Arc::clone(d),
                None => return rec.error(OpenAiError::model_not_found(&rec.model)),
            }
        };
        rec.deployment = Some(Arc::clone(&dep));
        if let Err(r) = dep.limiter.admit(&identity, &dep.spec.name).await {
            return rec.error(OpenAiError::rate_limited(
                r.message,
                r.kind.as_str(),
                r.retry_after,
            ));
        }
        let stream = head.stream;
        rec.stream = stream;

        let sticky_key: Option<&str> = match &dep.spec.stickiness {
            Some(Stickiness::Header { .. }) => dep
                .sticky_header
                .as_ref()
                .and_then(|h| headers.get(h))
                .and_then(|v| v.to_str().ok()),
            Some(Stickiness::User) => head.user.as_deref(),
            None => None,
        };
        let r = match sticky_key {
            Some(k) if !k.is_empty() => sticky_hash(&dep.spec.name, k),
            _ => random_u64(),
        };
        let attempts = plan(&cfg, &dep, r);
        let path = if op == Op::Predict {
            dep.spec.predict_path.clone()
        } else {
            op.path().to_owned()
        };

        // Cache lookup (non-streaming only), keyed by the first-choice version.
        let mut cache_status: Option<&'static str> = None;
        let mut store_key: Option<String> = None;
        if let (Some(cache), false, Some((_, first))) = (&dep.cache, stream, attempts.first()) {
            let dep_label = dep.spec.name.clone();
            if wants_no_cache(&headers) {
                cache_status = Some("bypass");
            } else {
                let json = match parse_whole(&raw) {
                    Ok(j) => j,
                    Err(e) => return rec.error(e),
                };
                let key = cache_key(&dep.spec.name, &dep.versions[*first].name, &path, &json);
                if let Some(hit) = cache.get(&key) {
                    self.inner
                        .metrics
                        .cache
                        .get_or_create(&CacheLabels {
                            deployment: dep_label,
                            result: "hit".into(),
                        })
                        .inc();
                    rec.cache_hit = true;
                    rec.served_by = dep.spec.name.clone();
                    rec.version = dep.versions[*first].name.clone();
                    rec.tokens_in = hit.tokens_in;
                    rec.tokens_out = hit.tokens_out;
                    rec.ready(200);
                    return respond(
                        StatusCode::OK,
                        Some(HeaderValue::from_static("application/json")),
                        Body::from(hit.body),
                        &rec,
                        Some("hit"),
                    );
                }
                cache_status = Some("miss");
                store_key = Some(key);
            }
            self.inner
                .metrics
                .cache
                .get_or_create(&CacheLabels {
                    deployment: dep.spec.name.clone(),
                    result: cache_status.unwrap_or("miss").into(),
                })
                .inc();
        }

        let mut last: Option<Failure> = None;
        for (n, (d, vi)) in attempts.iter().enumerate() {
            let v = &d.versions[*vi];
            let body = match self.body_for(&raw, &dep, d, v, op) {
                Ok(b) => b,
                Err(e) => return rec.error(e),
            };
            for _try in 0..=v.retries {
                let t0 = Instant::now();
                let lease = match &v.replicas {
                    Some(pool) => match pool.acquire().await {
                        Ok(l) => Some(l),
                        Err(e) => {
                            last = Some(Failure::Unavailable(e.0));
                            break;
                        }
                    },
                    None => None,
                };
                let base = lease.as_ref().map(|l| l.url()).or_else(|| {
                    let i = v.next.fetch_add(1, Ordering::Relaxed) % v.upstreams.len().max(1);
                    v.upstreams.get(i).map(String::as_str)
                });
                let result = self
                    .attempt(v, base, &path, &headers, body.clone(), stream)
                    .await;
                if result.is_ok() && self.inner.otlp.is_some() {
                    rec.server = base.and_then(crate::otlp::server_of);
                }
                if result.is_ok() {
                    rec.lease = lease;
                }
                let took = t0.elapsed();
                rec.upstream += took;
                let ok = result.is_ok();
                if let Some(c) = &d.canary
                    && let Some(ev) =
                        c.record(v.role == VersionRole::Canary, ok, took.as_secs_f64() * 1e3)
                {
                    tracing::warn!(deployment = %ev.deployment, version = %ev.canary_version, reason = %ev.reason, "canary rolled back");
                    self.inner
                        .metrics
                        .rollbacks
                        .get_or_create(&DeploymentLabels {
                            deployment: ev.deployment.clone(),
                        })
                        .inc();
                    self.inner.events.rolled_back(ev);
                }
                match result {
                    Ok(answer) => {
                        rec.served_by = d.spec.name.clone();
                        rec.version = v.name.clone();
                        rec.fallback_used = n > 0;
                        return self.finish(
                            rec,
                            answer,
                            store_key.filter(|_| n == 0),
                            &dep,
                            cache_status,
                        );
                    }
                    Err(f) => {
                        tracing::debug!(deployment = %d.spec.name, version = %v.name, error = %match &f { Failure::Timeout(m) | Failure::Other(m) | Failure::Unavailable(m) => m.as_str() }, "upstream attempt failed");
                        last = Some(f);
                    }
                }
            }
        }
        let e = match last {
            Some(Failure::Timeout(m)) => OpenAiError::gateway_timeout(format!(
                "no upstream of deployment `{}` answered in time; last: {m}",
                dep.spec.name
            )),
            Some(Failure::Other(m)) => OpenAiError::bad_gateway(format!(
                "no upstream of deployment `{}` gave a usable answer; last: {m}",
                dep.spec.name
            )),
            Some(Failure::Unavailable(m)) => OpenAiError::unavailable(format!(
                "deployment `{}` has no replica to serve the request: {m}",
                dep.spec.name
            )),
            None => OpenAiError::bad_gateway(format!(
                "deployment `{}` has no upstream to try",
                dep.spec.name
            )),
        };
        rec.error(e)
    }

    /// The body sent to version `v` of deployment `d`: the `model` field is rewritten when the
    /// version names an upstream model, or when a fallback deployment answers.
    fn body_for(
        &self,
        raw: &Bytes,
        primary: &Arc<Deployment>,
        d: &Arc<Deployment>,
        v: &Version,
        op: Op,
    ) -> Result<Bytes, OpenAiError> {
        if op == Op::Predict {
            return Ok(raw.clone());
        }
        let target = match (&v.model, Arc::ptr_eq(primary, d)) {
            (Some(m), _) => Some(m.clone()),
            (None, false) => d.spec.models.first().cloned(),
            (None, true) => None,
        };
        let Some(model) = target else {
            return Ok(raw.clone());
        };
        let mut j = parse_whole(raw)?;
        if let Some(o) = j.as_object_mut() {
            o.insert("model".into(), Value::String(model));
        }
        serde_json::to_vec(&j).map(Bytes::from).map_err(|e| {
            OpenAiError::invalid_request(format!("could not re-encode the request: {e}"), None)
        })
    }

    /// One attempt on the next upstream of `v`. 5xx, 429, timeouts, connection errors and
    /// unparseable JSON answers are failures; everything else is an answer for the client.
    async fn attempt(
        &self,
        v: &Version,
        replica: Option<&str>,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        stream: bool,
    ) -> Result<Answer, Failure> {
        let base = match replica {
            Some(url) => url,
            None => {
                let i = v.next.fetch_add(1, Ordering::Relaxed) % v.upstreams.len().max(1);
                v.upstreams.get(i).map(String::as_str).unwrap_or_default()
            }
        };
        let Some(uri) = join_uri(base, path) else {
            return Err(Failure::Other(format!("`{base}{path}` is not a valid URL")));
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(a) = headers.get(header::ACCEPT) {
            h.insert(header::ACCEPT, a.clone());
        }
        let deadline = tokio::time::Instant::now() + v.timeout;
        let resp = match tokio::time::timeout_at(deadline, crate::send_upstream(self, req)).await {
            Err(_) => {
                return Err(Failure::Timeout(format!(
                    "{base}: no response within {} ms",
                    v.timeout.as_millis()
                )));
            }
            Ok(Err(e)) => {
                let what = if e.connect {
                    "could not connect"
                } else {
                    "connection failed"
                };
                return Err(Failure::Other(format!("{base}: {what}: {}", e.message)));
            }
            Ok(Ok(r)) => r,
        };
        let (resp, conn) = resp;
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::Other(format!("{base}: returned HTTP {status}")));
        }
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        if stream && status.is_success() {
            return Ok(Answer::Stream {
                status,
                content_type,
                body: resp.into_body(),
                idle: v.timeout,
            });
        }
        let max = self.inner.options.max_response_bytes;
        let body =
            match tokio::time::timeout_at(deadline, Limited::new(resp.into_body(), max).collect())
                .await
            {
                Err(_) => {
                    return Err(Failure::Timeout(format!(
                        "{base}: response body not complete within {} ms",
                        v.timeout.as_millis()
                    )));
                }
                Ok(Err(e)) => {
                    return Err(Failure::Other(format!(
                        "{base}: could not read the response body: {e}"
                    )));
                }
                Ok(Ok(c)) => c.to_bytes(),
            };
        // Read to the end: the connection can take the next request.
        if let Some(c) = conn {
            c.release();
        }
        let fields = if status.is_success() {
            match answer_fields(&body, self.inner.otlp.is_some()) {
                Some(f) => Some(f),
                None => {
                    return Err(Failure::Other(format!(
                        "{base}: answered HTTP {status} with a body that is not JSON"
                    )));
                }
            }
        } else {
            None
        };
        Ok(Answer::Full {
            status,
            content_type,
            body,
            fields,
        })
    }

    fn finish(
        &self,
        mut rec: RequestRecord,
        answer: Answer,
        store_key: Option<String>,
        dep: &Arc<Deployment>,
        cache_status: Option<&'static str>,
    ) -> Response {
        match answer {
            Answer::Full {
                status,
                content_type,
                body,
                fields,
            } => {
                if let Some(f) = fields {
                    if self.inner.otlp.is_some() {
                        rec.response_model = f.model;
                    }
                    if let Some((i, o)) = f.tokens {
                        rec.tokens_in = i;
                        rec.tokens_out = o;
                    }
                }
                if status == StatusCode::OK
                    && let (Some(key), Some(cache)) = (store_key, &dep.cache)
                {
                    cache.put(
                        key,
                        Cached {
                            body: body.clone(),
                            tokens_in: rec.tokens_in,
                            tokens_out: rec.tokens_out,
                        },
                    );
                }
                rec.ready(status.as_u16());
                respond(status, content_type, Body::from(body), &rec, cache_status)
            }
            Answer::Stream {
                status,
                content_type,
                body,
                idle,
            } => {
                rec.ready(status.as_u16());
                rec.completed = false;
                let headers_rec = (rec.served_by.clone(), rec.version.clone());
                let sb = StreamBody {
                    inner: body,
                    sleep: Box::pin(tokio::time::sleep(idle)),
                    idle,
                    scanner: UsageScanner::default(),
                    record: Some(rec),
                    done: false,
                };
                let mut resp = Response::new(Body::new(sb));
                *resp.status_mut() = status;
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    content_type.unwrap_or(HeaderValue::from_static("text/event-stream")),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                insert_str(h, X_PLINTH_DEPLOYMENT, &headers_rec.0);
                insert_str(h, X_PLINTH_VERSION, &headers_rec.1);
                resp
            }
        }
    }
}

/// The headers the gateway adds to answers (names checked once, at compile time).
const X_PLINTH_DEPLOYMENT: HeaderName = HeaderName::from_static("x-plinth-deployment");
const X_PLINTH_VERSION: HeaderName = HeaderName::from_static("x-plinth-version");
const X_PLINTH_CACHE: HeaderName = HeaderName::from_static("x-plinth-cache");

fn insert_str(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn respond(
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Body,
    rec: &RequestRecord,
    cache: Option<&'static str>,
) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    insert_str(h, X_PLINTH_DEPLOYMENT, &rec.served_by);
    insert_str(h, X_PLINTH_VERSION, &rec.version);
    if let Some(c) = cache {
        h.insert(X_PLINTH_CACHE, HeaderValue::from_static(c));
    }
    resp
}

/// Finds `usage` in the `data:` lines of a server-sent event stream, across chunk borders.
#[derive(Default)]
struct UsageScanner {
    line: BytesMut,
    overflow: bool,
    tokens: Option<(u64, u64)>,
}

const MAX_SSE_LINE: usize = 1 << 20;

impl UsageScanner {
    fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            if !self.overflow {
                self.line.extend_from_slice(&rest[..pos]);
                self.scan_line();
            }
            self.line.clear();
            self.overflow = false;
            rest = &rest[pos + 1..];
        }
        if self.line.len() + rest.len() > MAX_SSE_LINE {
            self.overflow = true;
            self.line.clear();
        } else if !self.overflow {
            self.line.extend_from_slice(rest);
        }
    }

    fn scan_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(data)
            && let Some(u) = usage_of(&v)
        {
            self.tokens = Some(u);
        }
    }
}

/// Passes an upstream stream through frame by frame as it arrives, with an idle timeout between
/// frames; an upstream that breaks off or stalls ends the stream with an OpenAI-shaped error
/// event. Dropping it (stream done or client gone) records the request.
struct StreamBody {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    idle: Duration,
    scanner: UsageScanner,
    record: Option<RequestRecord>,
    done: bool,
}

impl StreamBody {
    fn end(&mut self, completed: bool) {
        self.done = true;
        if let Some(mut r) = self.record.take() {
            r.completed = completed;
            if let Some((i, o)) = self.scanner.tokens {
                r.tokens_in = i;
                r.tokens_out = o;
            }
        }
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        if self.record.is_some() {
            self.end(false);
        }
    }
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.scanner.feed(d);
                }
                let next = tokio::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(next);
                match frame.into_data() {
                    Ok(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                    Err(f) => Poll::Ready(Some(Ok(f))),
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(false);
                let err = OpenAiError::bad_gateway(format!("upstream stream broke off: {e}"));
                Poll::Ready(Some(Ok(Frame::data(err.sse_event()))))
            }
            Poll::Ready(None) => {
                this.end(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_ready() {
                    this.end(false);
                    let err = OpenAiError::gateway_timeout(format!(
                        "upstream sent nothing for {} ms",
                        this.idle.as_millis()
                    ));
                    return Poll::Ready(Some(Ok(Frame::data(err.sse_event()))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn answer_fields_read_typed_and_unusual_answers_alike() {
        let f = answer_fields(
            br#"{"id":"x","model":"m\u00e9","choices":[{"a":[1,{"b":null}]}],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            true,
        )
        .unwrap();
        assert_eq!(f.model.as_deref(), Some("m\u{e9}"));
        assert_eq!(f.tokens, Some((9, 2)));
        // The model is only kept when asked for.
        let f = answer_fields(br#"{"model":"m","usage":{"prompt_tokens":1}}"#, false).unwrap();
        assert_eq!((f.model, f.tokens), (None, Some((1, 0))));
        // Counts as floats, a usage that is not an object, a model that is not a string: the
        // lenient reading, never a failure; a repeated key: an answer without fields.
        let f = answer_fields(
            br#"{"usage":{"prompt_tokens":9.0,"completion_tokens":3}}"#,
            true,
        );
        assert_eq!(f.unwrap().tokens, Some((0, 3)));
        let f = answer_fields(br#"{"model":7,"usage":"many"}"#, true).unwrap();
        assert_eq!((f.model, f.tokens), (None, Some((0, 0))));
        let f = answer_fields(br#"{"model":"a","model":"b","usage":null}"#, true).unwrap();
        assert_eq!((f.model, f.tokens), (None, None));
        // JSON that is not an object has no fields; what is not JSON is no answer.
        let f = answer_fields(b" [1, 2]", true).unwrap();
        assert_eq!((f.model, f.tokens), (None, None));
        assert!(answer_fields(b"{\"model\": ", true).is_none());
        assert!(answer_fields(b"<html>", true).is_none());
    }

    #[test]
    fn request_heads_are_checked_like_whole_documents() {
        let h = RequestHead::parse(
            Op::Chat,
            br#" {"messages":[{"role":"user","content":"x\"y"}],"model":"gpt","stream":true,"user":"u1"}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            RequestHead {
                model: "gpt".into(),
                stream: true,
                user: Some("u1".into()),
            }
        );
        let h = RequestHead::parse(Op::Chat, br#"{"model":"a","stream":null,"model":"b"}"#);
        assert_eq!(h.unwrap().model, "b");
        let err = |op, body: &[u8]| RequestHead::parse(op, body).unwrap_err().message;
        assert!(err(Op::Chat, b"{\"model\":").contains("not valid JSON"));
        assert_eq!(
            err(Op::Chat, br#"["model"]"#),
            "request body must be a JSON object"
        );
        assert_eq!(
            err(Op::Embeddings, br#"{"input":"x"}"#),
            "missing required field `model`"
        );
        assert_eq!(err(Op::Chat, br#"{"model":1}"#), "`model` must be a string");
        assert_eq!(
            err(Op::Completions, br#"{"model":"m","stream":"yes"}"#),
            "`stream` must be a boolean"
        );
        // Predict takes any JSON, and only JSON.
        assert_eq!(
            RequestHead::parse(Op::Predict, b"[1,2]").unwrap(),
            RequestHead::default()
        );
        assert!(err(Op::Predict, b"{").contains("not valid JSON"));
    }

    #[test]
    fn scanner_finds_usage_across_chunks() {
        let mut s = UsageScanner::default();
        s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\nda");
        assert_eq!(s.tokens, None);
        s.feed(b"ta: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"comp");
        s.feed(b"letion_tokens\":3}}\r\n\ndata: [DONE]\n\n");
        assert_eq!(s.tokens, Some((7, 3)));
    }

    #[test]
    fn scanner_ignores_null_usage_and_huge_lines() {
        let mut s = UsageScanner::default();
        s.feed(b"data: {\"usage\":null}\n");
        assert_eq!(s.tokens, None);
        s.feed(&vec![b'x'; MAX_SSE_LINE + 10]);
        s.feed(b"\"usage\":{\"prompt_tokens\":1}}\n");
        assert_eq!(s.tokens, None, "overflowed line is skipped");
        s.feed(b"data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":5}}\n");
        assert_eq!(s.tokens, Some((2, 5)));
    }

    #[test]
    fn no_cache_headers() {
        let mut h = HeaderMap::new();
        assert!(!wants_no_cache(&h));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert!(wants_no_cache(&h));
        let mut h = HeaderMap::new();
        h.insert("x-plinth-cache", HeaderValue::from_static("bypass"));
        assert!(wants_no_cache(&h));
    }
}
