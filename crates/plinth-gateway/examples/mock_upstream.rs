//! A fast mock OpenAI-compatible upstream for benchmarks: fixed answers after an optional delay.
//!
//! `cargo run --release -p plinth-gateway --example mock_upstream -- [--listen 127.0.0.1:9000]
//!  [--delay-ms 0] [--threads N]`

use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

type Error = Box<dyn std::error::Error + Send + Sync>;

const CHAT: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1,"model":"mock","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hello"}}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;
const EMBED: &str = r#"{"object":"list","model":"mock","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"usage":{"prompt_tokens":2,"total_tokens":2}}"#;
const MODELS: &str =
    r#"{"object":"list","data":[{"id":"mock","object":"model","created":0,"owned_by":"mock"}]}"#;

fn main() -> Result<(), Error> {
    let mut listen = "127.0.0.1:9000".to_owned();
    let mut delay = 0u64;
    let mut threads = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--listen" => listen = v,
            "--delay-ms" => delay = v.parse().map_err(|e| format!("--delay-ms `{v}`: {e}"))?,
            "--threads" => {
                threads = Some(
                    v.parse::<usize>()
                        .map_err(|e| format!("--threads `{v}`: {e}"))?,
                )
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let delay = Duration::from_millis(delay);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(async move {
        let answer = move |body: &'static str| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(move || answer(CHAT)))
            .route("/v1/completions", post(move || answer(CHAT)))
            .route("/v1/embeddings", post(move || answer(EMBED)))
            .route("/v1/models", get(move || answer(MODELS)));
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
