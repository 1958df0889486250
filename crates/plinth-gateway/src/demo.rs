//! The demo model server: a small OpenAI-compatible server that answers every request with a
//! fixed sentence naming its version, counts tokens as words, and can be told to fail a share of
//! requests or to answer slowly. `plinth up` runs two of them (a stable and a canary version)
//! behind the gateway; the end-to-end tests use it as a real upstream process
//! (`plinth demo-model-server`). It is not a model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// How a demo model server behaves.
#[derive(Debug, Clone)]
pub struct DemoModel {
    /// Version name, said in every answer (`hello from <name>`).
    pub name: String,
    /// Share of requests answered with HTTP 500 (0–1), spread evenly (no randomness).
    pub error_rate: f64,
    /// Delay before each answer.
    pub delay: Duration,
}

#[derive(Clone)]
struct St {
    model: Arc<DemoModel>,
    served: Arc<AtomicU64>,
}

/// Whether request number `n` (from 0) fails at `rate`: every time `n × rate` passes a whole
/// number, so a rate of 0.25 fails requests 3, 7, 11, …
fn fails(n: u64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
}

fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "content" | "text"))
            .map(|(_, v)| words(v))
            .sum(),
        _ => 0,
    }
}

async fn before(st: &St) -> Option<Response> {
    let n = st.served.fetch_add(1, Ordering::Relaxed);
    if !st.model.delay.is_zero() {
        tokio::time::sleep(st.model.delay).await;
    }
    fails(n, st.model.error_rate).then(|| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": format!("demo model {} failed on purpose", st.model.name),
                "type": "server_error", "param": null, "code": "demo_failure"}})),
        )
            .into_response()
    })
}

fn bad_json(e: &serde_json::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"error": {"message": format!("body is not JSON: {e}"),
            "type": "invalid_request_error", "param": null, "code": "invalid_json"}}),
        ),
    )
        .into_response()
}

async fn chat(State(st): State<St>, body: axum::body::Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_json(&e),
    };
    if let Some(r) = before(&st).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("demo").to_owned();
    let content = format!("hello from {}", st.model.name);
    let prompt_tokens = words(&body["messages"]) + words(&body["prompt"]);
    let completion_tokens = content.split_whitespace().count() as u64;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    if body["stream"].as_bool() == Some(true) {
        let with_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
        let mut text = String::new();
        for (i, w) in content.split_whitespace().enumerate() {
            let piece = if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            };
            let ev = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
            text.push_str(&format!("data: {ev}\n\n"));
        }
        let last = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        text.push_str(&format!("data: {last}\n\n"));
        if with_usage {
            let ev = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [], "usage": usage});
            text.push_str(&format!("data: {ev}\n\n"));
        }
        text.push_str("data: [DONE]\n\n");
        return ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-demo", "object": "chat.completion", "created": 0, "model": model,
        "system_fingerprint": st.model.name,
        "choices": [{"index": 0, "finish_reason": "stop", "text": content,
            "message": {"role": "assistant", "content": content}}],
        "usage": usage,
    }))
    .into_response()
}

async fn embeddings(State(st): State<St>, body: axum::body::Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_json(&e),
    };
    if let Some(r) = before(&st).await {
        return r;
    }
    let inputs = match &body["input"] {
        Value::Array(a) => a.len().max(1),
        _ => 1,
    };
    let tokens = words(&body["input"]);
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125, i as f64]}))
        .collect();
    axum::Json(
        json!({"object": "list", "model": body["model"], "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response()
}

async fn predict(State(st): State<St>, body: axum::body::Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_json(&e),
    };
    if let Some(r) = before(&st).await {
        return r;
    }
    axum::Json(json!({"version": st.model.name, "input": body})).into_response()
}

/// The demo model server's routes.
pub fn router(model: DemoModel) -> Router {
    let name = model.name.clone();
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/predict", post(predict))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/v1/models",
            get(move || async move {
                axum::Json(json!({"object": "list", "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "plinth-demo"}]}))
            }),
        )
        .with_state(St {
            model: Arc::new(model),
            served: Arc::new(AtomicU64::new(0)),
        })
}

/// Serves a demo model on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    model: DemoModel,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(model))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_spread_evenly_at_the_rate() {
        for (rate, want) in [(0.0, 0), (0.25, 25), (0.3, 30), (1.0, 100)] {
            let n = (0..100).filter(|&n| fails(n, rate)).count();
            assert_eq!(n, want, "rate {rate}");
        }
        assert!(!fails(0, 0.25) && fails(3, 0.25));
    }

    #[test]
    fn tokens_are_words_of_the_content() {
        let m = json!([{"role": "user", "content": "one two three"}, {"role": "system", "content": "four"}]);
        assert_eq!(words(&m), 4);
        assert_eq!(words(&json!("a b")), 2);
    }
}
