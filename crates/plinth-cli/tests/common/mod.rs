//! End-to-end harness: spawns the real `plinth` binary on port 0 with a temporary data
//! directory, and runs CLI commands against it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "e2e-admin-bootstrap-token-0123456789abcdef";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_plinth")
}

/// A running `plinth serve`.
pub struct Server {
    pub url: String,
    pub child: Child,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh data dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server with a fresh data dir and `WORKSPACE` applied.
    pub fn with_workspace() -> Server {
        let s = Server::start();
        s.apply("workspace.yaml", WORKSPACE);
        s
    }

    /// Writes `yaml` to `name` in the data dir and applies it as the admin.
    pub fn apply(&self, name: &str, yaml: &str) {
        let file = write(&self.data_dir, name, yaml);
        self.ok(ADMIN, &["apply", "-f", &file]);
    }

    /// Starts a server on an existing data dir (to restart after a crash).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("PLINTH_BOOTSTRAP_TOKEN", ADMIN)
            .env("PLINTH_LOG", "warn")
            .env_remove("PLINTH_DATABASE_URL")
            .env_remove("PLINTH_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn plinth serve");
        let url = read_url(&mut child);
        Server {
            url,
            child,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Runs the CLI against this server as `token`; returns (exit code, stdout, stderr).
    pub fn cli(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin())
            .args(args)
            .env("PLINTH_SERVER", &self.url)
            .env("PLINTH_TOKEN", token)
            .env("PLINTH_CONFIG_DIR", self.data_dir.join("cli-config"))
            .output()
            .expect("run plinth");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like `cli` but asserts success and returns stdout.
    pub fn ok(&self, token: &str, args: &[&str]) -> String {
        let (code, out, err) = self.cli(token, args);
        assert_eq!(
            code, 0,
            "plinth {args:?} failed\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("plinth.db")
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub fn terminate(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stdout until it prints its address; keeps draining stdout afterwards.
pub fn read_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read server stdout");
        assert!(n > 0, "server exited before printing its address");
        if let Some(rest) = line.trim().split("listening on ").nth(1) {
            break rest.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "server did not print its address in time"
        );
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    url
}

/// A child process of the test, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `plinth ARGS` and reads the URL it prints once it listens.
pub fn spawn_listening(args: &[&str]) -> (String, Proc) {
    let mut child = Command::new(bin())
        .args(args)
        .env("PLINTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plinth");
    let url = read_url(&mut child);
    (url, Proc(child))
}

/// A demo model server process.
pub struct Model {
    pub url: String,
    _proc: Proc,
}

impl Model {
    pub fn start(name: &str, error_rate: f64) -> Model {
        let rate = error_rate.to_string();
        let (url, proc_) = spawn_listening(&[
            "demo-model-server",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--error-rate",
            &rate,
        ]);
        Model { url, _proc: proc_ }
    }
}

/// Writes `text` to a file under `dir` and returns its path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&p, text).expect("write file");
    p.display().to_string()
}

pub const WORKSPACE: &str = r#"
apiVersion: plinth/v1
kind: Pool
metadata: {name: gpu-a, labels: {region: eu-west}}
spec: {nodes: 2, cpusPerNode: 32, memoryGibPerNode: 256, accelerator: {type: nvidia-h100, count: 8}, procurement: spot, pricePerGpuHour: 2.5}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: team-a}
spec: {displayName: Team A}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: team-b}
spec: {displayName: Team B}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: queue-a}
spec: {team: team-a, cohort: shared, quotas: [{pool: gpu-a, gpus: 8}]}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: queue-b}
spec: {team: team-b, cohort: shared, quotas: [{pool: gpu-a, gpus: 8}]}
"#;

/// Creates a token for `team` with `role` as the admin and returns its secret.
pub fn token(server: &Server, team: &str, role: &str) -> String {
    named_token(server, team, role, &format!("{team}-{role}"))
}

/// Creates a token for `team` with `role` named `name` as the admin and returns its secret.
pub fn named_token(server: &Server, team: &str, role: &str, name: &str) -> String {
    let out = server.ok(
        ADMIN,
        &[
            "token", "create", "--team", team, "--role", role, "--name", name, "-o", "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("token json");
    v["token"].as_str().expect("token field").to_string()
}

/// A workspace of team-a with one CPU pool `pool` (its `spec` as flow YAML) and a queue
/// `queue` of team-a that may use `cpus` cores of it.
pub fn cpu_workspace(pool: &str, spec: &str, queue: &str, cpus: u32) -> String {
    format!(
        r#"
apiVersion: plinth/v1
kind: Pool
metadata: {{name: {pool}}}
spec: {spec}
---
apiVersion: plinth/v1
kind: Team
metadata: {{name: team-a}}
---
apiVersion: plinth/v1
kind: Queue
metadata: {{name: {queue}}}
spec: {{team: team-a, quotas: [{{pool: {pool}, gpus: 0, cpus: {cpus}}}]}}
"#
    )
}

/// An ODCS data contract `id` of one table `id` whose column `id` is a required, unique integer.
pub fn id_contract(id: &str) -> String {
    format!(
        "apiVersion: v3.0.2\nkind: DataContract\nid: {id}\nversion: 1.0.0\nstatus: active\n\
         schema:\n  - name: {id}\n    properties:\n      - {{name: id, logicalType: integer, \
         required: true, unique: true}}\n"
    )
}

/// Writes `id_contract(id)` to `<id>.odcs.yaml` under `dir` and applies it as the admin.
pub fn apply_id_contract(s: &Server, dir: &Path, id: &str) {
    let contract = write(dir, &format!("{id}.odcs.yaml"), &id_contract(id));
    s.ok(ADMIN, &["apply", "-f", &contract]);
}

/// A small tokio runtime for one blocking HTTP exchange.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// How a request authenticates: not at all, with a bearer token, or with the console's
/// session cookie.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Session(&'a str),
}

/// One request to the server: `method path` with `auth` and an optional JSON body; returns the
/// status and the body text.
pub fn http(
    s: &Server,
    method: &str,
    path: &str,
    auth: Auth,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    runtime().block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url));
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.bearer_auth(t),
            Auth::Session(t) => req = req.header("cookie", format!("plinth_session={t}")),
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    })
}

/// Like `http`, with the answer as JSON (as a JSON string when it is not JSON).
pub fn http_json(
    s: &Server,
    method: &str,
    path: &str,
    auth: Auth,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = http(s, method, path, auth, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The body of `GET path` with `auth`, whatever its status.
pub fn get_text(s: &Server, path: &str, auth: Auth) -> String {
    http(s, "GET", path, auth, None).1
}

/// An MLflow-style call as `tok` (anonymous when empty); returns the status and the JSON
/// answer (`null` when it is not JSON).
pub fn call(
    s: &Server,
    tok: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = if tok.is_empty() {
        Auth::None
    } else {
        Auth::Bearer(tok)
    };
    let (status, text) = http(s, method, path, auth, body.as_ref());
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Like `call`, asserting the answer is 200; returns the JSON answer.
pub fn call_ok(
    s: &Server,
    tok: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let (status, body) = call(s, tok, method, path, body);
    assert_eq!(status, 200, "{body}");
    body
}

/// `python script` with the MLflow client pointed at `s` as `tok` (no telemetry, no retries,
/// warnings off); the caller adds arguments and runs it.
pub fn mlflow_command(python: &Path, script: &Path, s: &Server, tok: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .env("MLFLOW_TRACKING_URI", &s.url)
        .env("MLFLOW_TRACKING_TOKEN", tok)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        .env("PYTHONWARNINGS", "ignore");
    cmd
}

/// A PostgreSQL database of one test, `plinth_<name>_<pid>`, dropped when this is dropped.
pub struct PgDb {
    base: String,
    name: String,
    pub url: String,
}

/// Runs `sql` on the base test database.
fn admin_sql(base: &str, sql: &[String]) {
    runtime().block_on(async {
        let admin = plinth_store::Store::connect(base)
            .await
            .expect("postgres reachable for the e2e test");
        for q in sql {
            admin.execute_raw(q).await.unwrap();
        }
        admin.close().await;
    });
}

impl PgDb {
    /// A fresh database (`None` with PLINTH_SKIP_POSTGRES=1).
    pub fn create(name: &str) -> Option<PgDb> {
        if std::env::var("PLINTH_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("skipped: PLINTH_SKIP_POSTGRES=1");
            return None;
        }
        let base = std::env::var("PLINTH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("plinth_{name}_{}", std::process::id());
        admin_sql(
            &base,
            &[
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ],
        );
        let (prefix, _) = base.rsplit_once('/').unwrap();
        let url = format!("{prefix}/{name}");
        Some(PgDb { base, name, url })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        admin_sql(
            &self.base,
            &[format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )],
        );
    }
}
