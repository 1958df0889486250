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
        let file = write(&s.data_dir, "workspace.yaml", WORKSPACE);
        s.ok(ADMIN, &["apply", "-f", &file]);
        s
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
    let out = server.ok(
        ADMIN,
        &[
            "token",
            "create",
            "--team",
            team,
            "--role",
            role,
            "--name",
            &format!("{team}-{role}"),
            "-o",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("token json");
    v["token"].as_str().expect("token field").to_string()
}
