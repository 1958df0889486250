//! Connections to plain `http://` upstreams: each thread that sends requests keeps its own pool
//! of idle HTTP/1 connections (no lock, no shared state, no task per request; a worker of
//! [`crate::serve_workers`] only ever uses its own). `https://` upstreams go through
//! hyper-util's pooled client with TLS.
//!
//! A connection goes back to the pool only once its answer was read to the end
//! ([`Conn::release`]); a connection whose answer was not read (a stream, a 5xx answer the
//! gateway did not read) is closed by hyper when dropped. A pooled connection is checked before
//! use: one the upstream closed meanwhile is dropped, and a request the connection could not
//! take is sent again on a new one, as hyper-util's client does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::uri::Authority;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) struct UpstreamError {
    /// Whether no connection could be made (else the connection failed).
    pub connect: bool,
    /// The error and its causes.
    pub message: String,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl From<hyper_util::client::legacy::Error> for UpstreamError {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        UpstreamError {
            connect: e.is_connect(),
            message: chain(&e),
        }
    }
}

/// A thread's idle connections, by `host:port`, most recently used last.
type LocalPool = HashMap<Authority, Vec<(SendRequest<Full<Bytes>>, Instant)>>;

thread_local! {
    static POOL: RefCell<LocalPool> = RefCell::new(HashMap::new());
}

/// The most recently used idle connection to `key` that is still open, if any. Connections
/// idle for `timeout` or longer (the oldest, at the front) are closed first, and closed ones
/// met on the way are dropped.
fn pop_idle(key: &Authority, timeout: Duration) -> Option<SendRequest<Full<Bytes>>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.get_mut(key)?;
        if let Some(cutoff) = Instant::now().checked_sub(timeout) {
            let stale = list.partition_point(|(_, since)| *since <= cutoff);
            list.drain(..stale);
        }
        while let Some((s, _)) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    })
}

/// A connection lent to one request; [`Conn::release`] gives it back.
pub(crate) struct Conn {
    key: Authority,
    sender: SendRequest<Full<Bytes>>,
    max_idle: usize,
}

impl Conn {
    /// Gives the connection back to this thread's pool: call once the answer was read to the
    /// end. Dropping a `Conn` instead closes the connection when its answer is done.
    pub(crate) fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            let list = p.entry(self.key).or_default();
            if list.len() < self.max_idle {
                list.push((self.sender, Instant::now()));
            }
        });
    }
}

/// `host` as a socket address host: without the brackets of an IPv6 literal.
fn bare_host(uri: &Uri) -> Option<&str> {
    let h = uri.host()?;
    Some(
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h),
    )
}

/// A new connection to `host:port`, its connection task spawned on this thread's runtime.
async fn connect(host: &str, port: u16) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
    let refused = |e: &dyn std::error::Error| UpstreamError {
        connect: true,
        message: format!("tcp connect error: {}", chain(e)),
    };
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| refused(&e))?;
    let _ = tcp.set_nodelay(true);
    let _ = socket2::SockRef::from(&tcp)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| refused(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Sends `req` (absolute `http://` URI) on an idle connection of this thread's pool (idle less
/// than `idle_timeout`) or a new one; the pool keeps at most `max_idle` per host.
pub(crate) async fn send(
    mut req: Request<Full<Bytes>>,
    max_idle: usize,
    idle_timeout: Duration,
) -> Result<(Response<Incoming>, Conn), UpstreamError> {
    let uri = req.uri().clone();
    let (Some(host), Some(authority)) = (bare_host(&uri), uri.authority()) else {
        return Err(UpstreamError {
            connect: true,
            message: format!("`{uri}` has no host"),
        });
    };
    let port = uri.port_u16().unwrap_or(80);
    let key = authority.clone();
    if !req.headers().contains_key(header::HOST) {
        let value = HeaderValue::from_str(authority.as_str()).map_err(|e| UpstreamError {
            connect: true,
            message: format!("`{authority}` is not a valid Host header: {e}"),
        })?;
        req.headers_mut().insert(header::HOST, value);
    }
    *req.uri_mut() = uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    loop {
        let (mut sender, reused) = match pop_idle(&key, idle_timeout) {
            Some(mut s) => match s.ready().await {
                Ok(()) => (s, true),
                // Closed between the check and now: try the next one.
                Err(_) => continue,
            },
            None => (connect(host, port).await?, false),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                return Ok((
                    resp,
                    Conn {
                        key,
                        sender,
                        max_idle,
                    },
                ));
            }
            Err(mut e) => match e.take_message() {
                // A pooled connection that closed before taking the request: a new one.
                Some(r) if reused => req = r,
                _ => {
                    return Err(UpstreamError {
                        connect: false,
                        message: chain(e.error()),
                    });
                }
            },
        }
    }
}
