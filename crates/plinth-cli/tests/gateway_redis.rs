//! End-to-end: gateways sharing their limit windows through a real `redis-server`. Two
//! `plinth gateway --deployments F --limits-redis URL` processes (one with `--workers`) in front
//! of a `plinth demo-model-server` admit a team's request limit exactly once between them; the
//! rest get 429 with `Retry-After` in OpenAI's error shape. `plinth serve
//! --gateway-limits-redis` shares the same windows with a standalone gateway. Bad URLs and a
//! wrong password stop the start naming the flag (never showing the password); a Redis that is
//! down only warns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../plinth-gateway/tests/redis_server/mod.rs"]
mod redis_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN, Auth, Model, Server, WORKSPACE, bin, http_json, runtime, spawn_listening};
use redis_server::RedisServer;
use serde_json::{Value, json};

const PASSWORD: &str = "e2e-redis-secret";
/// 10 requests a day per team (a day, so a test does not straddle a window's end).
const LIMIT: &str = "[{scope: team, windowSeconds: 86400, requests: 10}]";

fn deployments_file(dir: &std::path::Path, upstream: &str) -> String {
    common::write(
        dir,
        "deployments.yaml",
        &format!(
            "deployments:\n  - name: chat\n    models: [demo-chat]\n    versions:\n      - {{name: v1, weight: 1, upstreams: [\"{upstream}\"]}}\n    limits: {LIMIT}\n"
        ),
    )
}

/// One chat request: status, `Retry-After` and the JSON answer.
fn chat(gateway: &str, key: &str) -> (u16, Option<String>, Value) {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (r.status().as_u16(), retry, r.json().await.unwrap())
    })
}

/// Sends 20 requests as `key`, alternating between `gateways`; returns how many were admitted
/// and the refusals.
fn alternate(gateways: [&str; 2], key: &str) -> (usize, Vec<(Option<String>, Value)>) {
    let mut ok = 0;
    let mut refused = Vec::new();
    for n in 0..20 {
        let (status, retry, body) = chat(gateways[n % 2], key);
        match status {
            200 => ok += 1,
            429 => refused.push((retry, body)),
            s => panic!("unexpected status {s}: {body}"),
        }
    }
    (ok, refused)
}

fn assert_refusals(refused: &[(Option<String>, Value)], team: &str) {
    for (retry, body) in refused {
        let secs: u64 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=86_400).contains(&secs), "{secs}");
        // OpenAI's error shape.
        let e = &body["error"];
        assert_eq!(e["type"], "requests", "{body}");
        assert_eq!(e["code"], "rate_limit_exceeded", "{body}");
        assert!(e.as_object().unwrap().contains_key("param"), "{body}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(&format!("team `{team}`")), "{body}");
        assert!(message.contains("10 requests per 86400s"), "{body}");
    }
}

/// The limit windows in Redis, with each one's `requests` and TTL.
fn windows(redis: &RedisServer) -> Vec<(String, i64, i64)> {
    let mut keys = redis.command(&["KEYS", "plinth:limits:*"]).strings();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let requests = redis.command(&["HGET", &k, "requests"]).text();
            let ttl = redis.command(&["TTL", &k]).int();
            (k, requests.parse().unwrap(), ttl)
        })
        .collect()
}

#[test]
fn two_standalone_gateways_share_a_request_limit_through_redis() {
    let redis = RedisServer::with_password(PASSWORD);
    let model = Model::start("v1", 0.0);
    let tmp = tempfile::tempdir().unwrap();
    let file = deployments_file(tmp.path(), &model.url);
    let url = redis.url();
    let gateway = |extra: &[&str]| {
        let mut args = vec![
            "gateway",
            "--deployments",
            &file,
            "--listen",
            "127.0.0.1:0",
            "--key",
            "sk-a=team-a:key-a",
            "--key",
            "sk-b=team-b:key-b",
            "--limits-redis",
            &url,
        ];
        args.extend_from_slice(extra);
        spawn_listening(&args)
    };
    let (a, _a) = gateway(&[]);
    // The other one serves on two worker threads, each with its own runtime.
    let (b, _b) = gateway(&["--workers", "2"]);
    let (ok, refused) = alternate([&a, &b], "sk-a");
    // Limits under 50 requests are reserved one admission at a time: exactly the limit.
    assert_eq!(ok, 10, "{refused:?}");
    assert_eq!(refused.len(), 10);
    assert_refusals(&refused, "team-a");
    // team-b's own window is untouched by team-a's, on either gateway.
    assert_eq!(chat(&a, "sk-b").0, 200);
    assert_eq!(chat(&b, "sk-b").0, 200);
    // One hash per team's window, expiring a minute after the day ends.
    let w = windows(&redis);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].0.contains(":team-a:"), "{w:?}");
    // 10 admitted, and one reservation per gateway that found none left.
    assert_eq!(w[0].1, 12, "{w:?}");
    for (key, _, ttl) in &w {
        assert!(*ttl > 60 && *ttl <= 86_400 + 60, "{key}: ttl {ttl}");
    }
}

#[test]
fn plinth_serve_shares_its_gateway_limits_through_redis_with_a_standalone_gateway() {
    let redis = RedisServer::with_password(PASSWORD);
    let model = Model::start("v1", 0.0);
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        tmp.path(),
        &[
            "--gateway-listen",
            "127.0.0.1:0",
            "--gateway-limits-redis",
            &redis.url(),
        ],
    );
    server.apply("workspace.yaml", WORKSPACE);
    server.apply("chat.yaml", &stored_chat(&model.url));
    let served = gateway_of(&server);
    let key = common::token(&server, "team-a", "member");
    // The same deployment and limit in a file: a team-a key there counts in the same window.
    let file = deployments_file(tmp.path(), &model.url);
    let (alone, _alone) = spawn_listening(&[
        "gateway",
        "--deployments",
        &file,
        "--listen",
        "127.0.0.1:0",
        "--key",
        "sk-a=team-a:alone",
        "--limits-redis",
        &redis.url(),
    ]);
    wait_to_serve(&served, &key);
    // That probe was admitted: 9 left for the two gateways together.
    let mut ok = 1;
    let mut refused = Vec::new();
    for n in 0..19 {
        let (status, retry, body) = if n % 2 == 0 {
            chat(&alone, "sk-a")
        } else {
            chat(&served, &key)
        };
        match status {
            200 => ok += 1,
            429 => refused.push((retry, body)),
            s => panic!("unexpected status {s}: {body}"),
        }
    }
    assert_eq!(ok, 10, "{refused:?}");
    assert_eq!(refused.len(), 10);
    assert_refusals(&refused, "team-a");
    let w = windows(&redis);
    assert_eq!(w.len(), 1, "{w:?}");
}

#[test]
fn on_postgres_a_server_and_a_standalone_gateway_share_limits_through_redis_instead() {
    let Some(db) = common::PgDb::create("gw_redis") else {
        return;
    };
    let redis = RedisServer::with_password(PASSWORD);
    let model = Model::start("v1", 0.0);
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        tmp.path(),
        &[
            "--gateway-listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--gateway-limits-redis",
            &redis.url(),
        ],
    );
    server.apply("workspace.yaml", WORKSPACE);
    server.apply("chat.yaml", &stored_chat(&model.url));
    let served = gateway_of(&server);
    let (alone, _alone) = spawn_listening(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--limits-redis",
        &redis.url(),
    ]);
    let probe = common::token(&server, "team-b", "member");
    for gw in [&served, &alone] {
        wait_to_serve(gw, &probe);
    }
    let key = common::token(&server, "team-a", "member");
    let (ok, refused) = alternate([&served, &alone], &key);
    assert_eq!(ok, 10, "{refused:?}");
    assert_eq!(refused.len(), 10);
    assert_refusals(&refused, "team-a");
    // The windows are in Redis (not in the store's table): team-a's and the probes' team-b.
    let w = windows(&redis);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].1, 12, "{w:?}");
}

/// The chat Deployment of team-a as a stored document, with [`LIMIT`].
fn stored_chat(upstream: &str) -> String {
    format!(
        "apiVersion: plinth/v1\nkind: Deployment\nmetadata: {{name: chat}}\nspec:\n  team: team-a\n  models: [demo-chat]\n  versions:\n    - {{name: v1, weight: 1, upstreams: [\"{upstream}\"]}}\n  limits: {LIMIT}\n"
    )
}

/// The base URL of the server's gateway.
fn gateway_of(server: &Server) -> String {
    let (status, gw) = http_json(server, "GET", "/api/v1/gateway", Auth::Bearer(ADMIN), None);
    assert_eq!(status, 200, "{gw}");
    gw["url"]
        .as_str()
        .unwrap()
        .trim_end_matches("/v1")
        .to_string()
}

/// Waits until `gateway` serves chat (a gateway reads stored Deployments within a second).
fn wait_to_serve(gateway: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while chat(gateway, key).0 != 200 {
        assert!(Instant::now() < deadline, "{gateway} never served chat");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `plinth ARGS` to its end (at most 30 s); returns its exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(args)
        .env("PLINTH_LOG", "warn")
        .env("PLINTH_BOOTSTRAP_TOKEN", ADMIN)
        .env_remove("PLINTH_DATABASE_URL")
        .env_remove("PLINTH_CONFIG")
        .env_remove("PLINTH_GATEWAY_LIMITS_REDIS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_urls_and_wrong_passwords_stop_the_start_naming_the_flag_and_a_down_redis_only_warns() {
    let mut redis = RedisServer::with_password(PASSWORD);
    let model = Model::start("v1", 0.0);
    let tmp = tempfile::tempdir().unwrap();
    let file = deployments_file(tmp.path(), &model.url);
    let gateway = |url: &str| {
        run(&[
            "gateway",
            "--deployments",
            &file,
            "--listen",
            "127.0.0.1:0",
            "--limits-redis",
            url,
        ])
    };
    let (code, err) = gateway("redis://:hunter2@127.0.0.1:notaport");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "--limits-redis: Redis URL `redis://***@127.0.0.1:notaport`: port `notaport` is not a number"
        ),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let (code, err) = gateway("127.0.0.1:6379");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--limits-redis: Redis URL `127.0.0.1:6379`: not a URL"),
        "{err}"
    );
    // Redis refusing the password is a configuration error: the gateway does not start.
    let wrong = format!("redis://:wrong-hunter2@127.0.0.1:{}", redis.port);
    let (code, err) = gateway(&wrong);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--limits-redis: Redis at redis://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // `plinth serve` names its own flag and environment variable.
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let (code, err) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--gateway-limits-redis",
        "rediss://:hunter2@cache:6379",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("--gateway-limits-redis: Redis URL `rediss://***@cache:6379`: TLS"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data])
        .env("PLINTH_GATEWAY_LIMITS_REDIS", "redis://cache:six")
        .env_remove("PLINTH_CONFIG")
        .env_remove("PLINTH_DATABASE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("PLINTH_GATEWAY_LIMITS_REDIS: Redis URL"),
        "{err}"
    );
    // A Redis that is down: the gateway starts, warns (with the address, not the password) and
    // serves on its own count.
    let url = redis.url();
    let port = redis.port;
    redis.stop();
    let log = tmp.path().join("gateway.log");
    let mut child = Command::new(bin())
        .args(["gateway", "--deployments", &file, "--listen", "127.0.0.1:0"])
        .args(["--key", "sk-a=team-a:key-a", "--limits-redis", &url])
        .env("PLINTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = common::read_url(&mut child);
    let _gateway = common::Proc(child);
    assert_eq!(chat(&base, "sk-a").0, 200);
    let warned = std::fs::read_to_string(&log).unwrap();
    assert!(
        warned.contains(&format!("Redis at redis://127.0.0.1:{port}/0"))
            && warned.contains("not reachable yet"),
        "{warned}"
    );
    assert!(!warned.contains(PASSWORD), "{warned}");
}
