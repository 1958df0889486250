//! A test upstream that behaves like an OpenAI-compatible model server (with switchable
//! misbehaviour), a connection-resetting upstream, and helpers to run the gateway on port 0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use plinth_gateway::{DeploymentSpec, Gateway, StaticKeys};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// How the test upstream answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Answers at once (streams: three content chunks, usage if asked, `[DONE]`).
    Ok,
    /// Answers after a delay.
    Delay(Duration),
    /// Never answers.
    Hang,
    /// HTTP 500 with a JSON error.
    Status500,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// Sends part of the body, then closes the connection mid-response.
    HalfThenClose,
    /// Streams: sends the first chunk, then waits until `release()` before sending the rest.
    Gated,
    /// Streams: sends the first chunk, then stalls forever.
    StallAfterFirst,
}

#[derive(Clone)]
struct UpState {
    name: String,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<AtomicUsize>,
    gate: Arc<Notify>,
    last_body: Arc<Mutex<Option<Value>>>,
    streams_done: Arc<AtomicUsize>,
}

/// A running test upstream on 127.0.0.1, port 0.
pub struct TestUpstream {
    pub url: String,
    pub name: String,
    st: UpState,
}

impl TestUpstream {
    pub async fn start(name: &str, mode: Mode) -> TestUpstream {
        let st = UpState {
            name: name.to_owned(),
            mode: Arc::new(Mutex::new(mode)),
            hits: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Notify::new()),
            last_body: Arc::new(Mutex::new(None)),
            streams_done: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/predict", post(predict))
            .with_state(st.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestUpstream {
            url: format!("http://{addr}"),
            name: name.to_owned(),
            st,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.st.mode.lock().unwrap() = mode;
    }
    pub fn hits(&self) -> usize {
        self.st.hits.load(Ordering::SeqCst)
    }
    pub fn release(&self) {
        self.st.gate.notify_one();
    }
    pub fn last_body(&self) -> Option<Value> {
        self.st.last_body.lock().unwrap().clone()
    }
    /// Streams the upstream finished sending (all chunks written to its side).
    pub fn streams_done(&self) -> usize {
        self.st.streams_done.load(Ordering::SeqCst)
    }
}

fn chunk(name: &str, model: &str, content: &str) -> Bytes {
    let v = json!({
        "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
        "system_fingerprint": name,
    });
    Bytes::from(format!("data: {v}\n\n"))
}

fn usage_chunk(model: &str) -> Bytes {
    let v = json!({
        "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [], "usage": {"prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16},
    });
    Bytes::from(format!("data: {v}\n\n"))
}

async fn pre(st: &UpState, body: &Value) -> Result<Mode, Response> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    *st.last_body.lock().unwrap() = Some(body.clone());
    let mode = st.mode.lock().unwrap().clone();
    match &mode {
        Mode::Delay(d) => tokio::time::sleep(*d).await,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Mode::Status500 => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "boom", "type": "server_error"}})),
            )
                .into_response());
        }
        Mode::Garbage => {
            return Err((
                [(header::CONTENT_TYPE, "application/json")],
                "<html>definitely not json",
            )
                .into_response());
        }
        _ => {}
    }
    Ok(mode)
}

fn half_then_close(first: Bytes) -> Response {
    let s = futures_like_stream(vec![Ok(first), Err(std::io::Error::other("cut"))], None);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(s)
        .unwrap()
}

/// A body yielding `items` in order; with `gate`, waits on it after the first item.
fn futures_like_stream(
    items: Vec<Result<Bytes, std::io::Error>>,
    gate: Option<(Arc<Notify>, Option<Arc<AtomicUsize>>)>,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for (i, item) in items.into_iter().enumerate() {
            if i == 1
                && let Some((g, _)) = &gate
            {
                g.notified().await;
            }
            if tx.send(item).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some((_, Some(done))) = &gate {
            done.fetch_add(1, Ordering::SeqCst);
        }
    });
    Body::new(ChannelBody { rx })
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(hyper::body::Frame::data)))
    }
}

async fn chat(State(st): State<UpState>, axum::Json(body): axum::Json<Value>) -> Response {
    let mode = match pre(&st, &body).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let model = body["model"].as_str().unwrap_or("?").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    if !stream {
        if mode == Mode::HalfThenClose {
            return half_then_close(Bytes::from_static(b"{\"id\": \"chatcmpl-"));
        }
        return axum::Json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": model,
            "system_fingerprint": st.name,
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": format!("hello from {}", st.name)}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let first = chunk(&st.name, &model, "Hel");
    if mode == Mode::HalfThenClose {
        return half_then_close(first);
    }
    let mut items = vec![
        Ok(first),
        Ok(chunk(&st.name, &model, "lo ")),
        Ok(chunk(&st.name, &model, &st.name)),
    ];
    if include_usage {
        items.push(Ok(usage_chunk(&model)));
    }
    items.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    let gate = match mode {
        Mode::Gated => Some((st.gate.clone(), Some(st.streams_done.clone()))),
        Mode::StallAfterFirst => Some((Arc::new(Notify::new()), None)),
        _ => None,
    };
    if gate.is_none() {
        st.streams_done.fetch_add(1, Ordering::SeqCst);
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(futures_like_stream(items, gate))
        .unwrap()
}

async fn embeddings(State(st): State<UpState>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = pre(&st, &body).await {
        return r;
    }
    axum::Json(json!({
        "object": "list", "model": body["model"],
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }))
    .into_response()
}

async fn predict(State(st): State<UpState>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = pre(&st, &body).await {
        return r;
    }
    axum::Json(json!({"predictions": [body["instances"].as_array().map_or(0, Vec::len)], "server": st.name}))
        .into_response()
}

/// An upstream that accepts connections, reads the request and closes without answering.
pub async fn reset_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                drop(sock);
            });
        }
    });
    format!("http://{addr}")
}

pub const KEY: &str = "sk-test-alpha";
pub const KEY2: &str = "sk-test-beta";

pub fn keys() -> Arc<StaticKeys> {
    Arc::new(
        StaticKeys::new()
            .with_key(KEY, "team-a", "key-alpha")
            .with_key(KEY2, "team-a", "key-beta"),
    )
}

/// Parses deployments from YAML (panics on a bad test fixture).
pub fn deployments(yaml: &str) -> Vec<DeploymentSpec> {
    plinth_gateway::parse_deployments_yaml(yaml).expect("test deployments are valid")
}

/// Runs `gw` on 127.0.0.1 port 0; returns the base URL.
pub async fn serve(gw: &Gateway) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = gw.clone();
    tokio::spawn(async move {
        let _ = plinth_gateway::serve(listener, gw, std::future::pending()).await;
    });
    format!("http://{addr}")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// POSTs `body` to `path` with the test key.
pub async fn post_json(base: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Asserts an OpenAI-shaped error with `status` and `code`; returns the message.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status().as_u16(), status, "status");
    let v: Value = resp.json().await.expect("error body is JSON");
    let e = &v["error"];
    assert_eq!(e["code"], code, "error code in {v}");
    assert!(e["type"].is_string(), "error type in {v}");
    assert!(e.get("param").is_some(), "param present in {v}");
    e["message"].as_str().unwrap().to_owned()
}

/// A hand-written HTTP/1.1 upstream that answers every request with a fixed chat completion
/// (keep-alive), counts the connections it accepted and records each request's head; it can
/// be told to close each connection right after its next answer.
pub struct RawUpstream {
    pub url: String,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    close_after_answer: Arc<std::sync::atomic::AtomicBool>,
}

impl RawUpstream {
    pub async fn start() -> RawUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = RawUpstream {
            url: format!("http://{addr}"),
            connections: Arc::new(AtomicUsize::new(0)),
            closed: Arc::new(AtomicUsize::new(0)),
            heads: Arc::new(Mutex::new(Vec::new())),
            close_after_answer: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let (connections, closed, heads, close) = (
            up.connections.clone(),
            up.closed.clone(),
            up.heads.clone(),
            up.close_after_answer.clone(),
        );
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (closed, heads, close) = (closed.clone(), heads.clone(), close.clone());
                tokio::spawn(async move {
                    raw_connection(sock, heads, close).await;
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        up
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections that ended so far (closed by either side).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// The request line and headers of each request so far, lower-cased.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    pub fn close_after_answer(&self, on: bool) {
        self.close_after_answer.store(on, Ordering::SeqCst);
    }
}

async fn raw_connection(
    mut sock: tokio::net::TcpStream,
    heads: Arc<Mutex<Vec<String>>>,
    close: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        // One request: its head up to the blank line, then Content-Length bytes of body.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + len);
        heads.lock().unwrap().push(head);
        let body = r#"{"id":"raw","object":"chat.completion","model":"raw","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if sock.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if close.load(Ordering::SeqCst) {
            return;
        }
    }
}
