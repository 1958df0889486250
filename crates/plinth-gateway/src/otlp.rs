//! One span per request, exported over OTLP/HTTP with the JSON encoding (written by hand: no
//! OpenTelemetry SDK), following the OpenTelemetry GenAI semantic conventions.
//!
//! Spans leave the request path through a bounded queue ([`QUEUE`]; beyond it spans are dropped
//! and counted) and are sent by one task in batches of up to [`MAX_BATCH`]: whatever queued while
//! the last export ran, or during [`LINGER`] after the first span, goes in the next request.
//! A `traceparent` header (W3C Trace Context) on the request makes the span its child.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// Spans waiting to be exported; beyond this they are dropped.
pub const QUEUE: usize = 16_384;
/// The most spans in one export request.
pub const MAX_BATCH: usize = 512;
/// How long the exporter waits for more spans after the first of a batch.
pub const LINGER: Duration = Duration::from_millis(200);
/// Timeout of one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The full traces URL, e.g. `http://collector:4318/v1/traces`.
    pub traces_url: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Extra request headers (e.g. an API key of a hosted collector).
    pub headers: Vec<(String, String)>,
}

impl OtlpConfig {
    /// The exporter configuration from a base endpoint given as a flag or config value (`/v1/traces`
    /// is appended unless the URL already ends with it) or else the standard environment:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), `OTEL_EXPORTER_OTLP_ENDPOINT` (base),
    /// `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`k=v,k2=v2`) and
    /// `OTEL_SERVICE_NAME`. `None` when no endpoint is configured. An endpoint that is not an
    /// http(s) URL is an error naming where it came from.
    pub fn resolve(
        endpoint: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpConfig>, String> {
        let e = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let (url, source) = if let Some(ep) = endpoint.filter(|v| !v.trim().is_empty()) {
            (traces_url(ep), "--otlp-endpoint")
        } else if let Some(ep) = e("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            (ep.trim().to_string(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        } else if let Some(ep) = e("OTEL_EXPORTER_OTLP_ENDPOINT") {
            (traces_url(&ep), "OTEL_EXPORTER_OTLP_ENDPOINT")
        } else {
            return Ok(None);
        };
        match url.parse::<axum::http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
            _ => {
                return Err(format!(
                    "{source}: {url:?} is not an http:// or https:// URL such as http://127.0.0.1:4318"
                ));
            }
        }
        let mut headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(list) = e(var) {
                for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                    let Some((k, v)) = pair.split_once('=') else {
                        return Err(format!("{var}: {pair:?} is not key=value"));
                    };
                    let (k, v) = (k.trim().to_string(), v.trim().to_string());
                    if HeaderName::from_bytes(k.as_bytes()).is_err()
                        || HeaderValue::from_str(&v).is_err()
                    {
                        return Err(format!("{var}: {k:?} is not a valid header"));
                    }
                    headers.push((k, v));
                }
            }
        }
        Ok(Some(OtlpConfig {
            traces_url: url,
            service_name: e("OTEL_SERVICE_NAME").unwrap_or_else(|| "plinth-gateway".into()),
            headers,
        }))
    }
}

fn traces_url(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// One finished request, as a span.
#[derive(Debug, Clone)]
pub(crate) struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// `gen_ai.operation.name`.
    pub operation: &'static str,
    pub request_model: String,
    pub response_model: Option<String>,
    pub deployment: String,
    pub served_by: String,
    pub version: String,
    pub team: String,
    pub key_id: String,
    pub status: u16,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// The upstream that answered, as `host:port`.
    pub server: Option<(String, u16)>,
    pub cache_hit: bool,
    pub fallback_used: bool,
    pub stream: bool,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The trace id and parent span id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`),
/// when valid (all-zero ids are not).
pub(crate) fn parse_traceparent(headers: &HeaderMap) -> Option<([u8; 16], [u8; 8])> {
    let v = headers.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = v.split('-');
    let version = parts.next()?;
    let trace = unhex::<16>(parts.next()?)?;
    let parent = unhex::<8>(parts.next()?)?;
    let _flags = unhex::<1>(parts.next()?)?;
    if version == "ff" || version.len() != 2 || trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent))
}

/// Host and port of an upstream base URL (`server.address`, `server.port`).
pub(crate) fn server_of(base: &str) -> Option<(String, u16)> {
    let u: axum::http::Uri = base.parse().ok()?;
    let host = u.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = u.port_u16().unwrap_or(if u.scheme_str() == Some("https") {
        443
    } else {
        80
    });
    Some((host.to_string(), port))
}

fn s(key: &str, v: &str) -> Value {
    json!({"key": key, "value": {"stringValue": v}})
}
fn i(key: &str, v: u64) -> Value {
    // OTLP/JSON encodes 64-bit integers as strings.
    json!({"key": key, "value": {"intValue": v.to_string()}})
}
fn b(key: &str, v: bool) -> Value {
    json!({"key": key, "value": {"boolValue": v}})
}

/// The OTLP/JSON span of one request.
pub(crate) fn span_json(d: &SpanData) -> Value {
    let name = if d.request_model.is_empty() {
        format!("{} {}", d.operation, d.deployment)
    } else {
        format!("{} {}", d.operation, d.request_model)
    };
    let mut attrs = vec![
        s("gen_ai.operation.name", d.operation),
        s("gen_ai.provider.name", "openai"),
    ];
    if !d.request_model.is_empty() {
        attrs.push(s("gen_ai.request.model", &d.request_model));
    }
    if let Some(m) = &d.response_model {
        attrs.push(s("gen_ai.response.model", m));
    }
    if d.tokens_in > 0 || d.tokens_out > 0 {
        attrs.push(i("gen_ai.usage.input_tokens", d.tokens_in));
        attrs.push(i("gen_ai.usage.output_tokens", d.tokens_out));
    }
    if let Some((host, port)) = &d.server {
        attrs.push(s("server.address", host));
        attrs.push(i("server.port", u64::from(*port)));
    }
    attrs.push(i("http.response.status_code", u64::from(d.status)));
    let failed = d.status >= 400 || d.status == 0;
    if failed {
        attrs.push(s("error.type", &d.status.to_string()));
    }
    attrs.push(s("plinth.deployment", &d.deployment));
    if !d.served_by.is_empty() {
        attrs.push(s("plinth.served_by", &d.served_by));
    }
    if !d.version.is_empty() {
        attrs.push(s("plinth.version", &d.version));
    }
    attrs.push(s("plinth.team", &d.team));
    attrs.push(s("plinth.key_id", &d.key_id));
    attrs.push(b("plinth.cache_hit", d.cache_hit));
    attrs.push(b("plinth.fallback", d.fallback_used));
    attrs.push(b("plinth.stream", d.stream));
    let mut span = json!({
        "traceId": hex(&d.trace_id),
        "spanId": hex(&d.span_id),
        "name": name,
        // SPAN_KIND_CLIENT: a call to a model, as the GenAI conventions have it.
        "kind": 3,
        "startTimeUnixNano": d.start_unix_nanos.to_string(),
        "endTimeUnixNano": d.end_unix_nanos.max(d.start_unix_nanos).to_string(),
        "attributes": attrs,
        "status": if failed {
            json!({"code": 2, "message": format!("HTTP {}", d.status)})
        } else {
            json!({"code": 0})
        },
    });
    if let (Some(p), Some(o)) = (d.parent_span_id, span.as_object_mut()) {
        o.insert("parentSpanId".into(), Value::String(hex(&p)));
    }
    span
}

/// The body of one export request.
pub(crate) fn export_json(service_name: &str, spans: &[SpanData]) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [
            s("service.name", service_name),
            s("service.version", env!("CARGO_PKG_VERSION")),
        ]},
        "scopeSpans": [{
            "scope": {"name": "plinth-gateway", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
        }],
    }]})
}

/// The request side of the exporter: hands spans to the export task without waiting.
#[derive(Debug)]
pub(crate) struct Exporter {
    tx: tokio::sync::mpsc::Sender<SpanData>,
    pub dropped: Arc<AtomicU64>,
}

impl Exporter {
    pub fn export(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the export task on the current runtime (`None` without one).
pub(crate) fn start(config: OtlpConfig, client: crate::UpstreamClient) -> Option<Exporter> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    rt.spawn(run(config, client, rx, Arc::clone(&dropped)));
    Some(Exporter { tx, dropped })
}

async fn run(
    config: OtlpConfig,
    client: crate::UpstreamClient,
    mut rx: tokio::sync::mpsc::Receiver<SpanData>,
    dropped: Arc<AtomicU64>,
) {
    let headers: BTreeMap<String, String> = config.headers.iter().cloned().collect();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut failures = 0u64;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                _ => break,
            }
        }
        let body = export_json(&config.service_name, &batch).to_string();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&config.traces_url)
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let outcome = match req.body(Full::new(Bytes::from(body))) {
            Err(e) => Err(e.to_string()),
            Ok(req) => match tokio::time::timeout(EXPORT_TIMEOUT, client.request(req)).await {
                Err(_) => Err("no answer within 10 s".to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("answered HTTP {status}"))
                    }
                }
            },
        };
        if let Err(e) = outcome {
            dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            failures += 1;
            // The first failure and then every 100th, not one line per batch.
            if failures % 100 == 1 {
                tracing::warn!(url = %config.traces_url, error = %e, spans = batch.len(), "gateway: cannot export spans over OTLP; dropped");
            }
        }
        batch.clear();
    }
}

/// Random ids for spans and traces.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let r = crate::proxy::random_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn endpoint_from_flag_or_the_standard_environment() {
        assert_eq!(OtlpConfig::resolve(None, env(&[])).unwrap(), None);
        let c = OtlpConfig::resolve(Some("http://c:4318/"), env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(c.traces_url, "http://c:4318/v1/traces");
        assert_eq!(c.service_name, "plinth-gateway");
        let c = OtlpConfig::resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=abc, x-team=ml"),
                ("OTEL_SERVICE_NAME", "edge"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_url, "http://base:4318/v1/traces");
        assert_eq!(c.service_name, "edge");
        assert_eq!(
            c.headers,
            vec![
                ("x-api-key".to_string(), "abc".to_string()),
                ("x-team".to_string(), "ml".to_string())
            ]
        );
        let c = OtlpConfig::resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t:443/custom"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_url, "https://t:443/custom", "used as is");
        let e = OtlpConfig::resolve(Some("collector:4318"), env(&[])).unwrap_err();
        assert!(
            e.starts_with("--otlp-endpoint: \"collector:4318/v1/traces\""),
            "{e}"
        );
        let e = OtlpConfig::resolve(None, env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]));
        assert!(e.is_ok(), "headers without an endpoint are not read");
    }

    #[test]
    fn traceparent_is_parsed_and_bad_ones_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let (t, p) = parse_traceparent(&h).unwrap();
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p), "00f067aa0ba902b7");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            assert_eq!(parse_traceparent(&h), None, "{bad}");
        }
    }

    #[test]
    fn span_carries_genai_attributes() {
        let d = SpanData {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            start_unix_nanos: 1_000,
            end_unix_nanos: 2_000,
            operation: "chat",
            request_model: "gpt-4o-mini".into(),
            response_model: Some("llama".into()),
            deployment: "chat".into(),
            served_by: "chat".into(),
            version: "v2".into(),
            team: "ml".into(),
            key_id: "k1".into(),
            status: 502,
            tokens_in: 7,
            tokens_out: 3,
            server: server_of("https://10.0.0.5"),
            cache_hit: false,
            fallback_used: true,
            stream: false,
        };
        let v = span_json(&d);
        assert_eq!(v["name"], "chat gpt-4o-mini");
        assert_eq!(v["traceId"], "01010101010101010101010101010101");
        assert_eq!(v["parentSpanId"], "0303030303030303");
        assert_eq!(v["status"]["code"], 2);
        let attrs: BTreeMap<String, Value> = v["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone()))
            .collect();
        assert_eq!(attrs["gen_ai.usage.input_tokens"]["intValue"], "7");
        assert_eq!(attrs["server.address"]["stringValue"], "10.0.0.5");
        assert_eq!(attrs["server.port"]["intValue"], "443");
        assert_eq!(attrs["error.type"]["stringValue"], "502");
        assert_eq!(attrs["plinth.fallback"]["boolValue"], true);
        assert_eq!(server_of("http://[::1]:8000"), Some(("::1".into(), 8000)));
    }
}
