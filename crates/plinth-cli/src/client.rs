//! A small HTTP client for the Plinth API: finds the server and token, sends JSON, and turns
//! error responses into messages and exit codes.

use std::path::PathBuf;

use plinth_types::ApiError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Conn;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub details: Vec<String>,
    pub exit_code: i32,
}

impl Failure {
    pub fn new(exit_code: i32, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            details: Vec::new(),
            exit_code,
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure {
            message: format!("{} ({})", e.message, e.code),
            details: e.details,
            exit_code: e.code.exit_code(),
        }
    }
}

pub type CmdResult = Result<i32, Failure>;

/// What `plinth login` saves.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    pub server: Option<String>,
    pub token: Option<String>,
}

pub fn saved_path() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PLINTH_CONFIG_DIR") {
        return Some(PathBuf::from(dir).join("credentials.json"));
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok()?;
    Some(base.join("plinth").join("credentials.json"))
}

pub fn load_saved() -> Saved {
    saved_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub struct Client {
    http: reqwest::Client,
    pub server: String,
    token: Option<String>,
}

impl Client {
    pub fn new(conn: &Conn) -> Self {
        let saved = load_saved();
        let server = conn
            .server
            .clone()
            .or(saved.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = conn.token.clone().or(saved.token);
        Client {
            http: reqwest::Client::new(),
            server,
            token,
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.server));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends a request and returns the body of a successful answer with its headers; an error
    /// answer becomes a failure (the server's error when it sent one).
    async fn fetch(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(Vec<u8>, reqwest::header::HeaderMap), Failure> {
        let resp = req.send().await.map_err(|e| {
            Failure::new(
                7,
                format!(
                    "cannot reach the server at {}: {}",
                    self.server,
                    root_cause(&e)
                ),
            )
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| {
            Failure::new(7, format!("reading the response from {}: {e}", self.server))
        })?;
        if !status.is_success() {
            if let Ok(err) = serde_json::from_slice::<ApiError>(&bytes) {
                return Err(err.into());
            }
            return Err(Failure::new(
                1,
                format!(
                    "server answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
            ));
        }
        Ok((bytes.to_vec(), headers))
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Failure> {
        let (bytes, _) = self.fetch(req).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::new(1, format!("unexpected response from {}: {e}", self.server)))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// GETs a text body; returns it with the response headers.
    pub async fn get_text(
        &self,
        path: &str,
    ) -> Result<(String, reqwest::header::HeaderMap), Failure> {
        let (bytes, headers) = self.fetch(self.request(reqwest::Method::GET, path)).await?;
        Ok((String::from_utf8_lossy(&bytes).into_owned(), headers))
    }

    /// GETs a body and writes it to `sink` chunk by chunk as it arrives (a large export is
    /// never held whole); returns the bytes written. An error answer becomes a failure.
    pub async fn get_into(
        &self,
        path: &str,
        sink: &mut dyn std::io::Write,
    ) -> Result<u64, Failure> {
        let mut resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| {
                Failure::new(
                    7,
                    format!(
                        "cannot reach the server at {}: {}",
                        self.server,
                        root_cause(&e)
                    ),
                )
            })?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            if let Ok(err) = serde_json::from_slice::<ApiError>(&bytes) {
                return Err(err.into());
            }
            return Err(Failure::new(
                1,
                format!(
                    "server answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
            ));
        }
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            Failure::new(
                7,
                format!(
                    "reading the response from {}: {}",
                    self.server,
                    root_cause(&e)
                ),
            )
        })? {
            sink.write_all(&chunk)
                .map_err(|e| Failure::new(1, format!("writing the output: {e}")))?;
            n += chunk.len() as u64;
        }
        sink.flush()
            .map_err(|e| Failure::new(1, format!("writing the output: {e}")))?;
        Ok(n)
    }

    /// POSTs raw bytes (an uploaded file) with the given content type.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T, Failure> {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Percent-encodes one URL path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes a file only its owner can read (credentials, tokens). With `create_new`, fails if the
/// file exists instead of replacing it.
pub fn write_private(path: &std::path::Path, text: &str, create_new: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    opts.open(path)?.write_all(text.as_bytes())
}
