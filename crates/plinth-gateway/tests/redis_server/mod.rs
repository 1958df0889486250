//! A real `redis-server` for tests, on a free loopback port, with nothing saved to disk
//! (`--save '' --appendonly no`), killed when dropped; and a tiny blocking client to look at
//! what the gateway stored. Used by the gateway crate's tests and, through `#[path]`, by the CLI's
//! end-to-end tests. A missing `redis-server` fails the test (install the `redis-server` Debian
//! package) rather than skipping it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` (or a stopped one that can be started again on its port).
pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    child: Option<Child>,
}

/// A reply of the test client.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("expected a number from Redis, got {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => s.clone(),
            other => panic!("expected text from Redis, got {other:?}"),
        }
    }

    pub fn strings(&self) -> Vec<String> {
        match self {
            Reply::Array(items) => items.iter().map(Reply::text).collect(),
            other => panic!("expected an array from Redis, got {other:?}"),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

impl RedisServer {
    /// Starts a `redis-server` without a password.
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// Starts a `redis-server` that wants `password` (`--requirepass`).
    pub fn with_password(password: &str) -> RedisServer {
        Self::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> RedisServer {
        let mut last = String::new();
        // A port found free may be taken before redis-server binds it: try a few.
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                password: password.map(str::to_string),
                child: None,
            };
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis://[:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => self.url_without_password(),
        }
    }

    pub fn url_without_password(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts `redis-server` on this port and waits until it answers; `Err` with its output
    /// when it exits first.
    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not found on PATH): these tests need a real \
                 Redis; install the `redis-server` Debian package (apt-get install redis-server; \
                 scripts/test does this)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut out = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut out);
                }
                return Err(format!(
                    "redis-server on port {} exited ({status}): {out}",
                    self.port
                ));
            }
            // Answering at all (PONG, or NOAUTH with a password) means it is ready.
            if let Ok(r) = self.raw_command(&["PING"], false) {
                match r {
                    Reply::Simple(_) => break,
                    Reply::Error(e) if e.starts_with("NOAUTH") => break,
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer within 15s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Runs one command (after AUTH when the server has a password) and returns the reply.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.raw_command(args, true)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Runs one command in database `db`.
    pub fn command_in(&self, db: u32, args: &[&str]) -> Reply {
        self.raw_commands(&[&["SELECT", &db.to_string()], args], true)
            .unwrap_or_else(|e| panic!("redis {args:?} in db {db}: {e}"))
            .pop()
            .expect("a reply")
    }

    fn raw_command(&self, args: &[&str], auth: bool) -> Result<Reply, String> {
        self.raw_commands(&[args], auth)?
            .pop()
            .ok_or_else(|| "no reply".to_string())
    }

    fn raw_commands(&self, commands: &[&[&str]], auth: bool) -> Result<Vec<Reply>, String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut w = stream.try_clone().map_err(|e| e.to_string())?;
        let mut r = BufReader::new(stream);
        let mut send = |args: &[&str]| -> Result<Reply, String> {
            let mut out = format!("*{}\r\n", args.len());
            for a in args {
                out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            w.write_all(out.as_bytes()).map_err(|e| e.to_string())?;
            read_reply(&mut r)
        };
        if auth && let Some(p) = &self.password {
            match send(&["AUTH", p])? {
                Reply::Simple(_) => {}
                other => return Err(format!("AUTH: {other:?}")),
            }
        }
        commands.iter().map(|c| send(c)).collect()
    }
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n");
    if line.is_empty() {
        return Err("connection closed".into());
    }
    let (kind, rest) = line.split_at(1);
    let num = || rest.parse::<i64>().map_err(|e| format!("{line:?}: {e}"));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(num()?),
        "$" => {
            let n = num()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let n = num()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(format!("not a Redis reply: {line:?}")),
    })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen (SIGSTOPped) server too.
        self.stop();
    }
}
