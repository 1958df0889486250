//! End-to-end: the inference gateway inside the real `plinth serve`, in front of demo model
//! servers run as real processes (`plinth demo-model-server`). Deployments are applied with the
//! CLI; requests go to the gateway's own port with server tokens as API keys. Checks the split,
//! the usage stored per request, hot swap on re-apply, bad documents rejected with the field
//! named, and an automatic canary rollback: audited, in the status and the console, and still in
//! force after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ADMIN, Auth, Model, PgDb, Server, WORKSPACE, bin, get_text, http_json, runtime,
    spawn_listening, token, write,
};
use serde_json::{Value, json};

/// A server with the workspace applied and its gateway on a free port.
struct Setup {
    server: Server,
    gateway: String,
    /// The PostgreSQL database URL, when not on SQLite.
    database: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

fn start_server(dir: &Path, database: Option<&str>) -> (Server, String) {
    let mut args = vec!["--gateway-listen", "127.0.0.1:0"];
    if let Some(url) = database {
        args.extend(["--database-url", url]);
    }
    let server = Server::start_in(dir, &args);
    let (status, gw) = api(&server, ADMIN, "/api/v1/gateway");
    assert_eq!(status, 200, "{gw}");
    let url = gw["url"].as_str().expect("gateway url").to_string();
    (server, url)
}

fn setup(database: Option<String>) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (server, gateway) = start_server(tmp.path(), database.as_deref());
    server.apply("workspace.yaml", WORKSPACE);
    Setup {
        server,
        gateway,
        database,
        _tmp: Some(tmp),
    }
}

/// GET `path` on the server's API as `token`.
fn api(s: &Server, token: &str, path: &str) -> (u16, Value) {
    http_json(s, "GET", path, Auth::Bearer(token), None)
}

/// Sends `n` chat requests for `model` to the gateway; returns each answer's status and
/// `x-plinth-version`.
/// One chat request (three words) to the gateway as `key`.
async fn send_chat(
    client: &reqwest::Client,
    gateway: &str,
    key: &str,
    model: &str,
) -> reqwest::Response {
    client
        .post(format!("{gateway}/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model": model, "messages": [{"role": "user", "content": "say hello please"}]}),
        )
        .send()
        .await
        .unwrap()
}

/// One chat request's status, `Retry-After` and JSON answer.
fn chat_once(gateway: &str, key: &str, model: &str) -> (u16, Option<String>, Value) {
    runtime().block_on(async {
        let r = send_chat(&reqwest::Client::new(), gateway, key, model).await;
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (r.status().as_u16(), retry, r.json().await.unwrap())
    })
}

fn chat(gateway: &str, key: &str, model: &str, n: usize) -> Vec<(u16, String)> {
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let r = send_chat(&client, gateway, key, model).await;
            let version = r
                .headers()
                .get("x-plinth-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            out.push((r.status().as_u16(), version));
        }
        out
    })
}

fn count(answers: &[(u16, String)]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (status, v) in answers {
        assert_eq!(*status, 200, "{answers:?}");
        *m.entry(v.clone()).or_insert(0) += 1;
    }
    m
}

/// Polls `cond` every 100 ms for up to 30 s.
fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Applies a Deployment `chat` of team-a serving model `demo-chat`.
fn apply_chat(s: &Server, versions: &str, extra: &str) {
    let doc = format!(
        "apiVersion: plinth/v1\nkind: Deployment\nmetadata: {{name: chat}}\nspec:\n  team: team-a\n  models: [demo-chat]\n  versions:\n{versions}{extra}"
    );
    s.apply("chat.yaml", &doc);
}

/// The console's deployments page as the admin sees it.
fn console_deployments(s: &Server) -> String {
    get_text(s, "/console/deployments", Auth::Session(ADMIN))
}

/// 1 per 1,000 input tokens, 2 per 1,000 output tokens: a three-word request answered with
/// three words costs 0.009.
const PRICING: &str = "  pricing: {inputPer1kTokens: 1.0, outputPer1kTokens: 2.0}\n";

fn version(name: &str, role: &str, weight: u32, url: &str) -> String {
    format!("    - {{name: {name}, role: {role}, weight: {weight}, upstreams: [\"{url}\"]}}\n")
}

/// Waits until the gateway serves `chat` at `generation`; returns its status.
fn status_at(s: &Server, generation: i64) -> Value {
    wait_for("the deployment's generation in the gateway", || {
        let (code, st) = api(s, ADMIN, "/api/v1/deployments/chat/status");
        (code == 200 && st["generation"] == generation).then_some(st)
    })
}

#[test]
fn stored_deployments_are_served_split_metered_and_hot_swapped() {
    let t = setup(None);
    let s = &t.server;
    let (v1, v2) = (Model::start("v1", 0.0), Model::start("v2", 0.0));
    apply_chat(
        s,
        &(version("v1", "stable", 80, &v1.url) + &version("v2", "canary", 20, &v2.url)),
        PRICING,
    );
    let st = status_at(s, 1);
    assert_eq!(st["team"], "team-a");
    assert_eq!(st["versions"][1]["share"], 0.2);
    assert!(s.ok(ADMIN, &["get", "deployments"]).contains("chat"));

    let key = token(s, "team-a", "member");
    let (_, who) = api(s, &key, "/api/v1/whoami");
    let n = 400;
    let split = count(&chat(&t.gateway, &key, "demo-chat", n));
    // v2 gets 20 %: within 5 standard deviations of the binomial count.
    let (mean, sd) = (n as f64 * 0.2, (n as f64 * 0.2 * 0.8).sqrt());
    let got = split.get("v2").copied().unwrap_or(0) as f64;
    assert!((got - mean).abs() <= 5.0 * sd, "split {split:?}");
    assert_eq!(split.values().sum::<usize>(), n);

    // Keys are the server's tokens: an unknown one is refused in OpenAI's error shape.
    let refused = chat_once(&t.gateway, "plt_not-a-token", "demo-chat");
    assert_eq!(refused.0, 401);
    assert_eq!(refused.2["error"]["code"], "invalid_api_key");

    // Every request is stored with team, key, version and the upstream's token counts.
    let usage = wait_for("usage records", || {
        let (_, u) = api(s, ADMIN, "/api/v1/deployments/chat/usage");
        let rows = u.as_array().cloned().unwrap_or_default();
        (rows.len() >= n).then_some(rows)
    });
    assert_eq!(usage.len(), n);
    let mut by_version = BTreeMap::new();
    for r in &usage {
        let tags = &r["tags"];
        assert_eq!(tags["team"], "team-a");
        assert_eq!(tags["key"], who["token_id"]);
        assert_eq!(tags["status"], "200");
        assert_eq!(tags["tokensIn"], "3", "three words asked");
        assert_eq!(tags["tokensOut"], "3", "`hello from vN`");
        assert_eq!(tags["cost"], "0.009000000", "3 × 1.0 + 3 × 2.0 per 1,000");
        *by_version
            .entry(tags["version"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(by_version, split, "usage matches who answered");
    let cli: Vec<Value> =
        serde_json::from_str(&s.ok(&key, &["deployment", "usage", "chat", "-o", "json"])).unwrap();
    assert_eq!(
        cli.len(),
        n,
        "the team's member reads its deployment's usage"
    );

    // The server's /metrics carries the gateway's GenAI metrics.
    let metrics = get_text(s, "/metrics", Auth::None);
    assert!(metrics.contains("gen_ai_client_token_usage"), "{metrics}");
    assert!(metrics.contains("plinth_gateway_requests_total{deployment=\"chat\",status=\"200\"}"));

    // The console shows the split and what 1,000 such requests cost.
    let page = console_deployments(s);
    assert!(
        page.contains("id=\"deployment-chat-cost\">9.0000 USD</span>"),
        "{page}"
    );
    assert!(page.contains("deployment-split-chart"));

    // Re-applying a changed deployment swaps it in the running gateway.
    apply_chat(s, &version("v2", "stable", 100, &v2.url), "");
    let st = status_at(s, 2);
    assert_eq!(st["versions"].as_array().unwrap().len(), 1);
    let after = count(&chat(&t.gateway, &key, "demo-chat", 50));
    assert_eq!(after, BTreeMap::from([("v2".to_string(), 50)]));
}

#[test]
fn spend_limit_answers_429_with_retry_after_once_the_window_is_spent() {
    let t = setup(None);
    let v1 = Model::start("v1", 0.0);
    // 0.009 a request: the third request crosses 0.02, the fourth is refused.
    let limit = "  limits: [{scope: key, windowSeconds: 3600, spend: 0.02}]\n";
    apply_chat(
        &t.server,
        &version("v1", "stable", 1, &v1.url),
        &format!("{PRICING}{limit}"),
    );
    status_at(&t.server, 1);
    let key = token(&t.server, "team-a", "member");
    for _ in 0..3 {
        assert_eq!(chat_once(&t.gateway, &key, "demo-chat").0, 200);
    }
    let (status, retry, body) = chat_once(&t.gateway, &key, "demo-chat");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "spend");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // The limit is per key: another key of the team is still served.
    let other = token(&t.server, "team-a", "viewer");
    assert_eq!(chat_once(&t.gateway, &other, "demo-chat").0, 200);
    // A revoked token stops working as an API key (identities are cached for 5 s).
    let (_, who) = api(&t.server, &other, "/api/v1/whoami");
    t.server.ok(
        ADMIN,
        &["token", "revoke", who["token_id"].as_str().unwrap()],
    );
    let refused = wait_for("the revoked key refused", || {
        let (status, _, body) = chat_once(&t.gateway, &other, "demo-chat");
        (status == 401).then_some(body)
    });
    assert_eq!(refused["error"]["code"], "invalid_api_key");
}

#[test]
fn a_gateway_address_asked_for_and_taken_stops_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            &addr,
        ])
        .arg("--data-dir")
        .arg(tmp.path())
        .env("PLINTH_BOOTSTRAP_TOKEN", ADMIN)
        .env_remove("PLINTH_DATABASE_URL")
        .env_remove("PLINTH_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr}: inference gateway:")),
        "{err}"
    );
}

#[test]
fn bad_deployment_documents_are_rejected_naming_the_field() {
    let t = setup(None);
    let s = &t.server;
    let ok_version = "{name: v1, weight: 1, upstreams: [\"http://127.0.0.1:9\"]}";
    let cases = [
        (
            "team: team-a\n  versions: [{name: v1, weight: 1, upstreams: [\"ftp://x\"]}]"
                .to_string(),
            "spec.versions[0].upstreams[0]: `ftp://x` must start with http:// or https://",
        ),
        (
            format!(
                "team: team-a\n  versions: [{ok_version}]\n  cache: {{ttlSeconds: 0, maxBytes: 10}}"
            ),
            "spec.cache.ttlSeconds",
        ),
        (format!("versions: [{ok_version}]"), "spec.team: missing"),
        (
            format!("team: team-a\n  versions: [{ok_version}]\n  fallbacks: [nowhere]"),
            "spec.fallbacks[0]",
        ),
        (
            format!("team: team-a\n  versions: [{ok_version}]\n  colour: blue"),
            "spec.colour: unknown field",
        ),
        (
            "team: team-a\n  versions: []".to_string(),
            "spec.versions: needs at least one version",
        ),
        (
            format!(
                "team: team-a\n  versions: [{ok_version}]\n  limits: [{{scope: team, windowSeconds: 60, spend: 5}}]"
            ),
            "spec.limits[0].spend: a spend limit needs the deployment's `pricing`",
        ),
        (
            format!("team: no-such-team\n  versions: [{ok_version}]"),
            "no-such-team",
        ),
    ];
    for (spec, want) in cases {
        let doc = format!(
            "apiVersion: plinth/v1\nkind: Deployment\nmetadata: {{name: bad}}\nspec:\n  {spec}\n"
        );
        let file = write(&s.data_dir, "bad.yaml", &doc);
        let (code, out, err) = s.cli(ADMIN, &["apply", "-f", &file]);
        assert_ne!(code, 0, "{doc} was accepted: {out}");
        assert!(err.contains(want), "{doc}\nwanted {want:?} in: {err}");
    }
    let (code, _, err) = s.cli(ADMIN, &["get", "deployment", "bad"]);
    assert_ne!(code, 0, "nothing was stored: {err}");
    // Another team's maintainer may not apply a deployment of team-a.
    let other = token(s, "team-b", "maintainer");
    let doc = format!(
        "apiVersion: plinth/v1\nkind: Deployment\nmetadata: {{name: x}}\nspec:\n  team: team-a\n  versions: [{ok_version}]\n"
    );
    let file = write(&s.data_dir, "x.yaml", &doc);
    let (code, _, err) = s.cli(&other, &["apply", "-f", &file]);
    assert_ne!(code, 0);
    assert!(err.contains("team-a"), "{err}");
}

#[test]
fn failing_canary_is_rolled_back_audited_shown_and_kept_after_restart_sqlite() {
    canary_rollback(None);
}

#[test]
fn failing_canary_is_rolled_back_audited_shown_and_kept_after_restart_postgres() {
    if let Some(db) = PgDb::create("gw_rollback") {
        canary_rollback(Some(db.url.clone()));
    }
}

fn canary_rollback(database: Option<String>) {
    let t = setup(database);
    let (v1, v2) = (Model::start("v1", 0.0), Model::start("v2", 1.0));
    let policy = "  canary: {windowSeconds: 300, minRequests: 10, maxErrorRateMargin: 0.2}\n";
    apply_chat(
        &t.server,
        &(version("v1", "stable", 50, &v1.url) + &version("v2", "canary", 50, &v2.url)),
        policy,
    );
    status_at(&t.server, 1);
    let key = token(&t.server, "team-a", "member");
    // Canary failures are retried on stable: clients only ever see v1 answer.
    let answers = count(&chat(&t.gateway, &key, "demo-chat", 80));
    assert_eq!(answers, BTreeMap::from([("v1".to_string(), 80)]));
    let st = wait_for("the rollback in the status", || {
        let (_, st) = api(&t.server, ADMIN, "/api/v1/deployments/chat/status");
        (st["rollbacks"].as_array().is_some_and(|r| r.len() == 1)).then_some(st)
    });
    assert_eq!(st["canaryRolledBack"], true);
    assert_eq!(st["versions"][1]["effectiveWeight"], 0);
    assert_eq!(st["versions"][1]["weight"], 50);
    let rb = &st["rollbacks"][0];
    assert_eq!(rb["canaryVersion"], "v2");
    assert_eq!(rb["generation"], 1);
    assert_eq!(rb["canaryErrorRate"], 1.0);
    assert!(rb["canaryRequests"].as_u64().unwrap() >= 10);

    let (_, audit) = api(
        &t.server,
        ADMIN,
        "/api/v1/audit?action=deployment.canary_rollback",
    );
    let events = audit.as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(events[0]["name"], "chat");
    assert_eq!(events[0]["team"], "team-a");
    assert_eq!(events[0]["detail"]["canaryVersion"], "v2");
    t.server.ok(ADMIN, &["audit", "verify"]);
    let out = t.server.ok(&key, &["deployment", "status", "chat"]);
    assert!(out.contains("canary rolled back"), "{out}");
    assert!(out.contains("rollback of chat v2 (generation 1)"), "{out}");

    // The traffic chart draws the stored usage rows, which the writer stores within
    // milliseconds of the requests.
    let page = wait_for("the traffic chart", || {
        let page = console_deployments(&t.server);
        page.contains("deployment-traffic-chart").then_some(page)
    });
    assert!(
        page.contains("id=\"deployment-chat-rolled-back\""),
        "{page}"
    );
    assert!(page.contains("id=\"deployment-chat-rollbacks\""));

    // After a restart the rolled-back canary of this generation gets no traffic.
    let Setup {
        server,
        database,
        _tmp,
        ..
    } = t;
    let dir = server.data_dir.clone();
    assert_eq!(server.terminate(), 0);
    let (server, gateway) = start_server(&dir, database.as_deref());
    // Every request answered before the stop was metered and survived it.
    let (_, usage) = api(&server, ADMIN, "/api/v1/deployments/chat/usage");
    assert_eq!(usage.as_array().map(Vec::len), Some(80), "{usage}");
    let st = status_at(&server, 1);
    assert_eq!(st["canaryRolledBack"], true);
    assert_eq!(st["versions"][1]["effectiveWeight"], 0);
    let answers = count(&chat(&gateway, &key, "demo-chat", 40));
    assert_eq!(answers, BTreeMap::from([("v1".to_string(), 40)]));
    let (_, audit) = api(
        &server,
        ADMIN,
        "/api/v1/audit?action=deployment.canary_rollback",
    );
    assert_eq!(
        audit.as_array().map(Vec::len),
        Some(1),
        "no second rollback: {audit}"
    );
}

#[test]
fn a_rollback_on_one_server_applies_on_another_sharing_postgres() {
    let Some(db) = PgDb::create("gw_shared") else {
        return;
    };
    let url = db.url.clone();
    let a = setup(Some(url.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let (b, b_gateway) = start_server(tmp.path(), Some(&url));
    let (v1, v2) = (Model::start("v1", 0.0), Model::start("v2", 1.0));
    let policy = "  canary: {windowSeconds: 300, minRequests: 10, maxErrorRateMargin: 0.2}\n";
    apply_chat(
        &a.server,
        &(version("v1", "stable", 50, &v1.url) + &version("v2", "canary", 50, &v2.url)),
        policy,
    );
    status_at(&b, 1);
    let key_a = token(&a.server, "team-a", "member");
    count(&chat(&a.gateway, &key_a, "demo-chat", 80));
    // Server B never saw the canary fail; the stored rollback takes it out of B's split.
    let st = wait_for("the rollback on the other server", || {
        let (_, st) = api(&b, ADMIN, "/api/v1/deployments/chat/status");
        (st["canaryRolledBack"] == true).then_some(st)
    });
    assert_eq!(st["versions"][1]["effectiveWeight"], 0);
    let key_b = token(&b, "team-a", "viewer");
    let answers = count(&chat(&b_gateway, &key_b, "demo-chat", 40));
    assert_eq!(answers, BTreeMap::from([("v1".to_string(), 40)]));
    let (_, who) = api(&b, &key_b, "/api/v1/whoami");
    let usage = wait_for("B's usage rows", || {
        let (_, u) = api(&b, ADMIN, "/api/v1/deployments/chat/usage");
        let mine: Vec<Value> = u
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["tags"]["key"] == who["token_id"])
            .collect();
        (mine.len() == 40).then_some(mine)
    });
    assert!(
        usage.iter().all(|r| r["tags"]["fallbackUsed"] == "false"),
        "no request through B tried the rolled-back canary"
    );
    let (_, audit) = api(&b, ADMIN, "/api/v1/audit?action=deployment.canary_rollback");
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
}

#[test]
fn a_standalone_gateway_on_the_servers_postgres_serves_its_deployments_and_tokens() {
    let Some(db) = PgDb::create("gw_alone") else {
        return;
    };
    let t = setup(Some(db.url.clone()));
    let (alone, _gateway) = spawn_listening(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
    ]);
    let alone = format!("{alone}/v1");
    let v1 = Model::start("v1", 0.0);
    apply_chat(&t.server, &version("v1", "stable", 1, &v1.url), PRICING);
    let key = token(&t.server, "team-a", "member");
    // It reads the Deployments and tokens the server stored.
    wait_for("the standalone gateway to serve chat", || {
        (chat_once(&alone, &key, "demo-chat").0 == 200).then_some(())
    });
    let answers = count(&chat(&alone, &key, "demo-chat", 20));
    assert_eq!(answers, BTreeMap::from([("v1".to_string(), 20)]));
    let (_, who) = api(&t.server, &key, "/api/v1/whoami");
    // Its usage rows land in the same store.
    wait_for("the standalone gateway's usage rows", || {
        let (_, u) = api(&t.server, ADMIN, "/api/v1/deployments/chat/usage");
        let mine = u.as_array().map(|rows| {
            rows.iter()
                .filter(|r| r["tags"]["key"] == who["token_id"])
                .count()
        });
        (mine == Some(21)).then_some(())
    });
    assert_eq!(chat_once(&alone, "plt_not-a-token", "demo-chat").0, 401);
}

#[test]
fn two_gateways_on_one_postgres_share_a_request_limit() {
    let Some(db) = PgDb::create("gw_limits") else {
        return;
    };
    let t = setup(Some(db.url.clone()));
    let (other, _gateway) = spawn_listening(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
    ]);
    let other = format!("{other}/v1");
    let v1 = Model::start("v1", 0.0);
    // 10 requests a day for team-a (a day, so the test does not straddle a window's end).
    apply_chat(
        &t.server,
        &version("v1", "stable", 1, &v1.url),
        "  limits: [{scope: team, windowSeconds: 86400, requests: 10}]\n",
    );
    let probe = token(&t.server, "team-b", "member");
    for gw in [&t.gateway, &other] {
        wait_for("both gateways to serve chat", || {
            (chat_once(gw, &probe, "demo-chat").0 == 200).then_some(())
        });
    }
    let key = token(&t.server, "team-a", "member");
    // 20 requests of team-a, alternating between the two gateways.
    let mut ok = 0;
    let mut refused = Vec::new();
    for n in 0..20 {
        let gw = if n % 2 == 0 { &t.gateway } else { &other };
        let (status, retry, body) = chat_once(gw, &key, "demo-chat");
        match status {
            200 => ok += 1,
            429 => refused.push((retry, body)),
            s => panic!("unexpected status {s}: {body}"),
        }
    }
    // Limits under 50 requests are reserved one admission at a time: exactly the limit.
    assert_eq!(ok, 10, "{refused:?}");
    assert_eq!(refused.len(), 10);
    for (retry, body) in &refused {
        let secs: u64 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=86_400).contains(&secs), "{secs}");
        assert_eq!(body["error"]["type"], "requests", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("team `team-a`"),
            "{body}"
        );
    }
    // team-b's own window is untouched by team-a's.
    assert_eq!(chat_once(&other, &probe, "demo-chat").0, 200);
}
