//! A [`LimitStore`] in Redis, so several gateways share their limit windows without a database.
//!
//! A small RESP2 client on tokio's `TcpStream` (no Redis crate): a URL such as
//! `redis://:password@10.0.0.9:6379/2` ([`RedisUrl`]), `AUTH` and `SELECT` when a connection is
//! opened, a pool of idle connections reused across calls, and a time limit on connecting
//! ([`CONNECT_TIMEOUT`]) and on every round trip ([`IO_TIMEOUT`]), so a Redis that hangs never
//! hangs a request. A connection that failed is dropped and the next call opens a fresh one; after
//! a time-out the store answers with an error at once for [`PAUSE_AFTER_TIMEOUT`] instead of
//! waiting again (the [`Limiter`](crate::limits::Limiter) then admits on the gateway's own count
//! and logs a warning, as it does for every store error).
//!
//! Each window is one hash, `plinth:limits:…` ([`RedisLimitStore::key`]), with the fields
//! `requests`, `tokens` and `spend`. [`LimitStore::add`] is one pipelined round trip:
//! `MULTI`, `HINCRBY requests`, `HINCRBY tokens`, `HINCRBYFLOAT spend`, `EXPIREAT` (the window's
//! end plus [`EXPIRY_SLACK_SECONDS`]), `EXEC`, so the addition is atomic and the totals come back
//! with it; ended windows expire on their own. Errors name the Redis address, never the password.
//! Redis Cluster is not supported (one Redis, or the primary's address).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::limits::{Counts, LimitFuture, LimitStore, WindowKey};

/// The longest wait for a TCP connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait for Redis to answer one round trip (including `AUTH`/`SELECT` on connect).
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// After a time-out, calls fail at once for this long instead of waiting again.
pub const PAUSE_AFTER_TIMEOUT: Duration = Duration::from_secs(1);
/// A window's hash expires this many seconds after the window ends.
pub const EXPIRY_SLACK_SECONDS: i64 = 60;
/// Every key of the limit windows starts with this.
pub const KEY_PREFIX: &str = "plinth:limits:";
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// The largest reply accepted (the store's replies are a few dozen bytes).
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// The shape of a URL, for error messages.
const URL_SHAPE: &str = "redis://[[user]:password@]host[:port][/db]";

/// A parsed `redis://[[user]:password@]host[:port][/db]` URL. Its `Debug` and `Display` never
/// show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    host: String,
    port: u16,
    db: u32,
    user: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `redis://host:port/db`: where the store is, without user or password.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "redis://[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

/// `url` with whatever stands between `://` and the last `@` (user and password) replaced by
/// `***`, for error messages.
pub fn redact_url(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let start = url
        .find("://")
        .map(|i| i + 3)
        .filter(|&s| s <= at)
        .unwrap_or(0);
    format!("{}***{}", &url[..start], &url[at..])
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RedisUrl {
    /// Parses a URL; the error names the URL (with user and password hidden) and what is wrong.
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let bad = |what: &str| format!("Redis URL `{}`: {what}", redact_url(url));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(&format!("not a URL; expected {URL_SHAPE}")));
        };
        match scheme {
            "redis" => {}
            "rediss" => {
                return Err(bad(
                    "TLS (rediss://) is not supported; use redis:// (e.g. through a TLS tunnel)",
                ));
            }
            other
                if other
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                return Err(bad(&format!(
                    "scheme `{other}` is not supported; expected {URL_SHAPE}"
                )));
            }
            _ => return Err(bad(&format!("not a URL; expected {URL_SHAPE}"))),
        }
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let Some((user, password)) = info.split_once(':') else {
                    return Err(bad(
                        "the password goes after a colon: redis://:password@host or redis://user:password@host",
                    ));
                };
                let decode = |s: &str| {
                    percent_decode(s).ok_or_else(|| bad("bad %-escape in the user or password"))
                };
                let (user, password) = (decode(user)?, decode(password)?);
                if password.is_empty() {
                    return Err(bad("the password after the colon is empty"));
                }
                ((!user.is_empty()).then_some(user), Some(password))
            }
        };
        if rest.contains(['?', '#']) {
            return Err(bad("query parameters and fragments are not supported"));
        }
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let db = if path.is_empty() {
            0
        } else {
            path.parse::<u32>().map_err(|_| {
                bad(&format!(
                    "database `{path}` is not a number (e.g. /0, the default)"
                ))
            })?
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(bad("`[` without `]` around an IPv6 address"));
            };
            match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(bad("expected `:port` after the IPv6 address")),
                },
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, Some(p)),
                Some(_) => return Err(bad("an IPv6 address goes in brackets: [::1]:6379")),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad(&format!("no host; expected {URL_SHAPE}")));
        }
        let port = match port {
            None => 6379,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad(&format!("port `{p}` is not a number from 1 to 65535"))),
            },
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            db,
            user,
            password,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn db(&self) -> u32 {
        self.db
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }
}

/// What went wrong talking to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisErrorKind {
    /// Could not connect, the connection broke, or Redis did not answer in time.
    Unreachable,
    /// Redis answered with an error (e.g. a wrong password, a database that does not exist).
    Refused,
    /// The answer was not what Redis sends (not a Redis server?).
    Protocol,
}

/// An error talking to Redis; its message names the address, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisError {
    pub kind: RedisErrorKind,
    /// `redis://host:port/db`.
    pub address: String,
    pub message: String,
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis at {}: {}", self.address, self.message)
    }
}

impl std::error::Error for RedisError {}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Parses one reply from the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// reply and how many bytes it took.
fn parse_reply(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("a reply line without an end".into());
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..eol]).map_err(|_| "a reply that is not UTF-8")?;
    let after = eol + 2;
    let int = || {
        line.parse::<i64>()
            .map_err(|_| format!("`{line}` is not a number"))
    };
    match first {
        b'+' => Ok(Some((Reply::Simple(line.to_string()), after))),
        b'-' => Ok(Some((Reply::Error(line.to_string()), after))),
        b':' => Ok(Some((Reply::Int(int()?), after))),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let n = usize::try_from(n).map_err(|_| "a bulk length out of range")?;
            if n > MAX_REPLY_BYTES {
                return Err(format!("a reply of {n} bytes (at most {MAX_REPLY_BYTES})"));
            }
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err("a bulk string without its end".into());
            }
            Ok(Some((
                Reply::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            )))
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            if n > 1024 || depth > 4 {
                return Err("an array too long or too deep".into());
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..n {
                match parse_reply(&buf[at..], depth + 1)? {
                    Some((r, used)) => {
                        items.push(r);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(format!(
            "an answer starting with {:?}, which Redis does not send (is this a Redis server?)",
            char::from(other)
        )),
    }
}

/// Appends one command in RESP (an array of bulk strings) to `out`.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Why a round trip failed, before it is given the address.
enum Failure {
    /// Connection-level (`received`: whether any byte of an answer came back).
    Io {
        message: String,
        received: bool,
    },
    /// Connecting or an answer took too long (what did).
    TimedOut(String),
    Refused(String),
    Protocol(String),
}

impl Failure {
    fn io(e: &std::io::Error, received: bool) -> Failure {
        Failure::Io {
            message: e.to_string(),
            received,
        }
    }
}

/// One connection to Redis.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not parsed yet.
    buf: Vec<u8>,
}

impl Conn {
    /// Connects, then `AUTH` and `SELECT` as the URL says (one round trip).
    async fn open(url: &RedisUrl) -> Result<Conn, Failure> {
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((url.host.as_str(), url.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Failure::Io {
                    message: format!("cannot connect: {e}"),
                    received: false,
                });
            }
            Err(_) => {
                return Err(Failure::TimedOut(format!(
                    "cannot connect within {}s",
                    CONNECT_TIMEOUT.as_secs_f64()
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        let mut out = Vec::new();
        let mut n = 0;
        if let Some(password) = &url.password {
            match &url.user {
                Some(user) => encode(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut out, &[b"AUTH", password.as_bytes()]),
            }
            n += 1;
        }
        if url.db != 0 {
            encode(&mut out, &[b"SELECT", url.db.to_string().as_bytes()]);
            n += 1;
        }
        if n > 0 {
            let replies = conn.round_trip_timed(&out, n).await?;
            for (i, r) in replies.into_iter().enumerate() {
                let what = if i == 0 && url.password.is_some() {
                    "authentication failed"
                } else {
                    "cannot select the database"
                };
                match r {
                    Reply::Simple(_) => {}
                    // Never echo what was sent: Redis's own message only.
                    Reply::Error(e) => return Err(Failure::Refused(format!("{what}: {e}"))),
                    other => {
                        return Err(Failure::Protocol(format!("{what}: unexpected {other:?}")));
                    }
                }
            }
        }
        Ok(conn)
    }

    /// Sends `out` (`n` commands) and reads `n` replies, within [`IO_TIMEOUT`].
    async fn round_trip_timed(&mut self, out: &[u8], n: usize) -> Result<Vec<Reply>, Failure> {
        match tokio::time::timeout(IO_TIMEOUT, self.round_trip(out, n)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::TimedOut(format!(
                "no answer within {}s",
                IO_TIMEOUT.as_secs_f64()
            ))),
        }
    }

    async fn round_trip(&mut self, out: &[u8], n: usize) -> Result<Vec<Reply>, Failure> {
        self.stream
            .write_all(out)
            .await
            .map_err(|e| Failure::io(&e, false))?;
        let mut replies = Vec::with_capacity(n);
        let mut received = !self.buf.is_empty();
        while replies.len() < n {
            match parse_reply(&self.buf, 0).map_err(Failure::Protocol)? {
                Some((r, used)) => {
                    self.buf.drain(..used);
                    replies.push(r);
                }
                None => {
                    if self.buf.len() > MAX_REPLY_BYTES {
                        return Err(Failure::Protocol("a reply too long".into()));
                    }
                    let mut chunk = [0u8; 4096];
                    let got = self
                        .stream
                        .read(&mut chunk)
                        .await
                        .map_err(|e| Failure::io(&e, received))?;
                    if got == 0 {
                        return Err(Failure::Io {
                            message: "connection closed by Redis".into(),
                            received,
                        });
                    }
                    received = true;
                    self.buf.extend_from_slice(&chunk[..got]);
                }
            }
        }
        Ok(replies)
    }
}

/// A [`LimitStore`] in Redis (see the module docs).
pub struct RedisLimitStore {
    url: RedisUrl,
    address: String,
    idle: Mutex<Vec<Conn>>,
    /// Until when calls fail at once after a time-out.
    paused_until: Mutex<Option<Instant>>,
}

impl fmt::Debug for RedisLimitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimitStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisLimitStore {
    /// A store for `url`; connects on first use (see [`RedisLimitStore::ping`] to check first).
    pub fn new(url: RedisUrl) -> Self {
        RedisLimitStore {
            address: url.to_string(),
            url,
            idle: Mutex::new(Vec::new()),
            paused_until: Mutex::new(None),
        }
    }

    /// Parses `url` ([`RedisUrl::parse`]) and makes a store for it.
    pub fn from_url(url: &str) -> Result<Self, String> {
        RedisUrl::parse(url).map(Self::new)
    }

    /// `redis://host:port/db`, without user and password.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The Redis key of a window: [`KEY_PREFIX`], then the deployment, the limit and the subject,
    /// each as `{length in bytes}:{text}:` (so a `:` inside one cannot make two windows collide),
    /// then the window's start in Unix seconds.
    pub fn key(key: &WindowKey) -> String {
        let mut k = String::from(KEY_PREFIX);
        for part in [&key.deployment, &key.limit, &key.subject] {
            k.push_str(&format!("{}:{part}:", part.len()));
        }
        k.push_str(&key.window_start.to_string());
        k
    }

    /// Checks that Redis answers `PING` (with the URL's password and database).
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut out = Vec::new();
        encode(&mut out, &[b"PING"]);
        let replies = self.run(&out, 1).await?;
        match replies.first() {
            Some(Reply::Simple(s)) if s == "PONG" => Ok(()),
            Some(Reply::Error(e)) => Err(self.error(RedisErrorKind::Refused, e.clone())),
            other => Err(self.error(RedisErrorKind::Protocol, format!("PING answered {other:?}"))),
        }
    }

    fn error(&self, kind: RedisErrorKind, message: String) -> RedisError {
        RedisError {
            kind,
            address: self.address.clone(),
            message,
        }
    }

    fn failure(&self, f: Failure) -> RedisError {
        match f {
            Failure::Io { message, .. } => self.error(RedisErrorKind::Unreachable, message),
            Failure::TimedOut(what) => {
                if let Ok(mut p) = self.paused_until.lock() {
                    *p = Some(Instant::now() + PAUSE_AFTER_TIMEOUT);
                }
                self.error(
                    RedisErrorKind::Unreachable,
                    format!(
                        "{what} (not trying again for {}s)",
                        PAUSE_AFTER_TIMEOUT.as_secs_f64()
                    ),
                )
            }
            Failure::Refused(m) => self.error(RedisErrorKind::Refused, m),
            Failure::Protocol(m) => self.error(RedisErrorKind::Protocol, m),
        }
    }

    /// Sends `out` (`n` commands) on an idle connection or a new one and reads the `n` replies.
    /// A connection that fails is dropped. When an idle connection turns out closed before any
    /// answer came back (e.g. Redis restarted since), the idle ones are dropped and the commands
    /// are sent once more on a new connection (should Redis have run them before closing, an
    /// addition counts twice: limits then refuse early, never admit too many).
    async fn run(&self, out: &[u8], n: usize) -> Result<Vec<Reply>, RedisError> {
        if let Ok(mut p) = self.paused_until.lock()
            && let Some(until) = *p
        {
            if Instant::now() < until {
                return Err(self.error(
                    RedisErrorKind::Unreachable,
                    "timed out a moment ago; not trying again yet".to_string(),
                ));
            }
            *p = None;
        }
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        if let Some(mut conn) = pooled {
            match conn.round_trip_timed(out, n).await {
                Ok(r) => {
                    self.put_back(conn);
                    return Ok(r);
                }
                // Closed while idle: the others idle as long are likely closed too.
                Err(Failure::Io {
                    received: false, ..
                }) => {
                    if let Ok(mut v) = self.idle.lock() {
                        v.clear();
                    }
                }
                Err(f) => return Err(self.failure(f)),
            }
        }
        let mut conn = Conn::open(&self.url).await.map_err(|f| self.failure(f))?;
        let r = conn
            .round_trip_timed(out, n)
            .await
            .map_err(|f| self.failure(f))?;
        self.put_back(conn);
        Ok(r)
    }

    fn put_back(&self, conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        if let Ok(mut v) = self.idle.lock()
            && v.len() < MAX_IDLE
        {
            v.push(conn);
        }
    }

    async fn add_counts(&self, key: &WindowKey, add: Counts) -> Result<Counts, RedisError> {
        let k = Self::key(key);
        let requests = i64::try_from(add.requests).unwrap_or(i64::MAX).to_string();
        let tokens = i64::try_from(add.tokens).unwrap_or(i64::MAX).to_string();
        let spend = if add.spend.is_finite() {
            add.spend.to_string()
        } else {
            "0".to_string()
        };
        let expire = key
            .window_end
            .saturating_add(EXPIRY_SLACK_SECONDS)
            .to_string();
        let k = k.as_bytes();
        let mut out = Vec::with_capacity(256);
        encode(&mut out, &[b"MULTI"]);
        encode(&mut out, &[b"HINCRBY", k, b"requests", requests.as_bytes()]);
        encode(&mut out, &[b"HINCRBY", k, b"tokens", tokens.as_bytes()]);
        encode(&mut out, &[b"HINCRBYFLOAT", k, b"spend", spend.as_bytes()]);
        encode(&mut out, &[b"EXPIREAT", k, expire.as_bytes()]);
        encode(&mut out, &[b"EXEC"]);
        let replies = self.run(&out, 6).await?;
        let refused = |m: String| self.error(RedisErrorKind::Refused, m);
        let protocol = |m: String| self.error(RedisErrorKind::Protocol, m);
        // MULTI's OK and four QUEUED: an error here (e.g. NOAUTH) is Redis refusing.
        for r in &replies[..5.min(replies.len())] {
            if let Reply::Error(e) = r {
                return Err(refused(e.clone()));
            }
        }
        let items = match replies.last() {
            Some(Reply::Array(Some(items))) if items.len() == 4 => items,
            Some(Reply::Error(e)) => return Err(refused(e.clone())),
            other => return Err(protocol(format!("EXEC answered {other:?}"))),
        };
        let int = |r: &Reply| match r {
            Reply::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
            Reply::Error(e) => Err(refused(e.clone())),
            other => Err(protocol(format!("expected a number, got {other:?}"))),
        };
        let requests = int(&items[0])?;
        let tokens = int(&items[1])?;
        let spend = match &items[2] {
            Reply::Bulk(Some(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| protocol("the spend total is not a number".into()))?,
            Reply::Error(e) => return Err(refused(e.clone())),
            other => return Err(protocol(format!("expected the spend total, got {other:?}"))),
        };
        if let Reply::Error(e) = &items[3] {
            return Err(refused(e.clone()));
        }
        Ok(Counts {
            requests,
            tokens,
            spend,
        })
    }
}

impl LimitStore for RedisLimitStore {
    fn add<'a>(&'a self, key: &'a WindowKey, add: Counts) -> LimitFuture<'a> {
        Box::pin(async move { self.add_counts(key, add).await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let u = RedisUrl::parse("redis://127.0.0.1").unwrap();
        assert_eq!((u.host(), u.port(), u.db()), ("127.0.0.1", 6379, 0));
        assert!(!u.has_password());
        assert_eq!(u.to_string(), "redis://127.0.0.1:6379/0");
        let u = RedisUrl::parse("redis://:s%40cret@cache.internal:6380/3").unwrap();
        assert_eq!((u.host(), u.port(), u.db()), ("cache.internal", 6380, 3));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.user, None);
        assert_eq!(u.to_string(), "redis://cache.internal:6380/3");
        let u = RedisUrl::parse("redis://gw:p@ss:word@[::1]:7000/").unwrap();
        assert_eq!(u.user.as_deref(), Some("gw"));
        assert_eq!(u.password.as_deref(), Some("p@ss:word"));
        assert_eq!((u.host(), u.port(), u.db()), ("::1", 7000, 0));
        assert_eq!(u.to_string(), "redis://[::1]:7000/0");
        let debug = format!("{u:?}");
        assert!(!debug.contains("p@ss"), "{debug}");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_and_hide_the_password() {
        for (url, says) in [
            ("localhost:6379", "not a URL; expected redis://"),
            ("http://localhost", "scheme `http` is not supported"),
            ("rediss://localhost", "TLS (rediss://) is not supported"),
            ("redis://", "no host"),
            ("redis://:6379", "no host"),
            (
                "redis://localhost:0",
                "port `0` is not a number from 1 to 65535",
            ),
            ("redis://localhost:99999", "port `99999`"),
            ("redis://localhost:abc", "port `abc`"),
            ("redis://localhost/x", "database `x` is not a number"),
            ("redis://::1", "an IPv6 address goes in brackets"),
            ("redis://[::1", "`[` without `]`"),
            ("redis://localhost?db=1", "query parameters"),
            (
                "redis://topsecret@localhost",
                "the password goes after a colon",
            ),
            (
                "redis://user:@localhost",
                "the password after the colon is empty",
            ),
            ("redis://:top%zzsecret@localhost", "bad %-escape"),
            ("redis://:topsecret@localhost:70000", "port `70000`"),
            ("redis://:top/secret@localhost/x", "database `x`"),
            ("topsecret@redis://localhost", "not a URL"),
            (":top secret@localhost", "not a URL"),
        ] {
            let e = RedisUrl::parse(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
            assert!(e.starts_with("Redis URL `"), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: the password shows in {e}");
        }
        assert_eq!(
            RedisUrl::parse("redis://:topsecret@localhost:70000").unwrap_err(),
            "Redis URL `redis://***@localhost:70000`: port `70000` is not a number from 1 to 65535"
        );
    }

    #[test]
    fn keys_keep_parts_with_colons_apart() {
        let k = |d: &str, l: &str, s: &str| {
            RedisLimitStore::key(&WindowKey {
                deployment: d.into(),
                limit: l.into(),
                subject: s.into(),
                window_start: 1_700_000_000,
                window_end: 1_700_000_060,
            })
        };
        assert_eq!(
            k("chat", "0:team:60", "research"),
            "plinth:limits:4:chat:9:0:team:60:8:research:1700000000"
        );
        assert_ne!(k("a:b", "0:team:60", "c"), k("a", "b:0:team:60", "c"));
        assert_ne!(k("a", "0:team:60", "b:c"), k("a", "0:team:60:b", "c"));
    }

    #[test]
    fn replies_parse_in_pieces() {
        let full = b"+OK\r\n+QUEUED\r\n*4\r\n:3\r\n:0\r\n$3\r\n1.5\r\n:1\r\n";
        for cut in 0..full.len() {
            let mut at = 0;
            let mut got = Vec::new();
            // Only the first `cut` bytes are there: whatever parses must be whole replies.
            while let Some((r, used)) = parse_reply(&full[at..cut], 0).unwrap() {
                got.push(r);
                at += used;
            }
            assert!(got.len() <= 3);
        }
        let (r, used) = parse_reply(&full[5..], 0).unwrap().unwrap();
        assert_eq!(r, Reply::Simple("QUEUED".into()));
        let (r, _) = parse_reply(&full[5 + used..], 0).unwrap().unwrap();
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Int(3),
                Reply::Int(0),
                Reply::Bulk(Some(b"1.5".to_vec())),
                Reply::Int(1),
            ]))
        );
        let e = parse_reply(b"HTTP/1.1 400 Bad Request\r\n", 0).unwrap_err();
        assert!(e.contains("is this a Redis server?"), "{e}");
    }
}
