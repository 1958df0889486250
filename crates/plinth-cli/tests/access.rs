//! End-to-end: every route × every role × own/other team, token revocation, and missing or
//! bad tokens. One table says what each combination must answer.

mod common;

use common::{ADMIN, Server, token};
use reqwest::Method;

const Q_A: &str = "apiVersion: plinth/v1\nkind: Queue\nmetadata: {name: queue-a}\nspec: {team: team-a, cohort: shared, priority: 5, quotas: [{pool: gpu-a, gpus: 8}]}\n";
const Q_B: &str = "apiVersion: plinth/v1\nkind: Queue\nmetadata: {name: queue-b}\nspec: {team: team-b, cohort: shared, priority: 5, quotas: [{pool: gpu-a, gpus: 8}]}\n";
const POOL: &str = "apiVersion: plinth/v1\nkind: Pool\nmetadata: {name: gpu-a}\nspec: {nodes: 3, cpusPerNode: 32, memoryGibPerNode: 256, accelerator: {type: nvidia-h100, count: 8}}\n";
const TEAM_A: &str =
    "apiVersion: plinth/v1\nkind: Team\nmetadata: {name: team-a}\nspec: {displayName: A}\n";

/// One request and the expected status for viewer, member, maintainer (all of team-a) and admin.
struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    yaml: bool,
    expect: [u16; 4],
}

fn cases() -> Vec<Case> {
    use Method as M;
    let c = |what, method, path, body: Option<&'static str>, yaml, expect| Case {
        what,
        method,
        path,
        body,
        yaml,
        expect,
    };
    vec![
        c(
            "whoami",
            M::GET,
            "/api/v1/whoami",
            None,
            false,
            [200, 200, 200, 200],
        ),
        c(
            "overview",
            M::GET,
            "/api/v1/overview",
            None,
            false,
            [200, 200, 200, 200],
        ),
        c(
            "kinds",
            M::GET,
            "/api/v1/kinds",
            None,
            false,
            [200, 200, 200, 200],
        ),
        c(
            "list pools (cluster-scoped)",
            M::GET,
            "/api/v1/resources/pools",
            None,
            false,
            [200, 200, 200, 200],
        ),
        c(
            "get pool",
            M::GET,
            "/api/v1/resources/pool/gpu-a",
            None,
            false,
            [200, 200, 200, 200],
        ),
        c(
            "get own team",
            M::GET,
            "/api/v1/resources/team/team-a",
            None,
            false,
            [200, 200, 200, 200],
        ),
        c(
            "get other team",
            M::GET,
            "/api/v1/resources/team/team-b",
            None,
            false,
            [403, 403, 403, 200],
        ),
        c(
            "get own queue",
            M::GET,
            "/api/v1/resources/queue/queue-a",
            None,
            false,
            [200, 200, 200, 200],
        ),
        c(
            "get other queue",
            M::GET,
            "/api/v1/resources/queue/queue-b",
            None,
            false,
            [403, 403, 403, 200],
        ),
        c(
            "apply own queue",
            M::POST,
            "/api/v1/apply",
            Some(Q_A),
            true,
            [403, 403, 200, 200],
        ),
        c(
            "apply other queue",
            M::POST,
            "/api/v1/apply",
            Some(Q_B),
            true,
            [403, 403, 403, 200],
        ),
        c(
            "apply pool",
            M::POST,
            "/api/v1/apply",
            Some(POOL),
            true,
            [403, 403, 403, 200],
        ),
        c(
            "apply own team",
            M::POST,
            "/api/v1/apply",
            Some(TEAM_A),
            true,
            [403, 403, 403, 200],
        ),
        c(
            "delete own queue (dry run)",
            M::DELETE,
            "/api/v1/resources/queue/queue-a?dry_run=true",
            None,
            false,
            [403, 403, 200, 200],
        ),
        c(
            "delete other queue (dry run)",
            M::DELETE,
            "/api/v1/resources/queue/queue-b?dry_run=true",
            None,
            false,
            [403, 403, 403, 200],
        ),
        c(
            "delete pool (dry run)",
            M::DELETE,
            "/api/v1/resources/pool/gpu-a?dry_run=true",
            None,
            false,
            [403, 403, 403, 409],
        ),
        c(
            "list tokens",
            M::GET,
            "/api/v1/tokens",
            None,
            false,
            [403, 403, 200, 200],
        ),
        c(
            "create own-team token",
            M::POST,
            "/api/v1/tokens",
            Some(r#"{"name":"bot","team":"team-a","role":"viewer"}"#),
            false,
            [403, 403, 201, 201],
        ),
        c(
            "create other-team token",
            M::POST,
            "/api/v1/tokens",
            Some(r#"{"name":"bot","team":"team-b","role":"viewer"}"#),
            false,
            [403, 403, 403, 201],
        ),
        c(
            "create admin token",
            M::POST,
            "/api/v1/tokens",
            Some(r#"{"name":"root","role":"admin"}"#),
            false,
            [403, 403, 403, 201],
        ),
        c(
            "audit log",
            M::GET,
            "/api/v1/audit",
            None,
            false,
            [403, 403, 200, 200],
        ),
        c(
            "audit log of other team",
            M::GET,
            "/api/v1/audit?team=team-b",
            None,
            false,
            [403, 403, 403, 200],
        ),
        c(
            "audit verify",
            M::POST,
            "/api/v1/audit/verify",
            None,
            false,
            [403, 403, 403, 200],
        ),
    ]
}

#[test]
fn routes_by_role_and_team() {
    let s = Server::with_workspace();
    let roles = ["viewer", "member", "maintainer"];
    let mut tokens: Vec<String> = roles.iter().map(|r| token(&s, "team-a", r)).collect();
    tokens.push(ADMIN.to_string());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut failures = Vec::new();
    rt.block_on(async {
        let c = reqwest::Client::new();
        for case in cases() {
            for (i, tok) in tokens.iter().enumerate() {
                let mut req = c
                    .request(case.method.clone(), format!("{}{}", s.url, case.path))
                    .bearer_auth(tok);
                if let Some(b) = case.body {
                    req = req
                        .header(
                            "content-type",
                            if case.yaml {
                                "application/yaml"
                            } else {
                                "application/json"
                            },
                        )
                        .body(b);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                let role = ["viewer", "member", "maintainer", "admin"][i];
                if status != case.expect[i] {
                    failures.push(format!(
                        "{} as {role}: expected {}, got {status}: {body}",
                        case.what, case.expect[i]
                    ));
                }
                if status == 403 && body["code"] != "permission_denied" {
                    failures.push(format!(
                        "{} as {role}: 403 without permission_denied code: {body}",
                        case.what
                    ));
                }
            }
            // No token at all is always 401.
            let resp = c
                .request(case.method.clone(), format!("{}{}", s.url, case.path))
                .send()
                .await
                .unwrap();
            if resp.status() != 401 {
                failures.push(format!(
                    "{} without a token: expected 401, got {}",
                    case.what,
                    resp.status()
                ));
            }
        }
        // Lists only show what the caller may read.
        let queues: serde_json::Value = c
            .get(format!("{}/api/v1/resources/queues", s.url))
            .bearer_auth(&tokens[0])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = queues
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["queue-a"],
            "a team-a viewer lists only team-a queues"
        );
        let teams: serde_json::Value = c
            .get(format!("{}/api/v1/resources/teams", s.url))
            .bearer_auth(&tokens[2])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(teams.as_array().unwrap().len(), 1);
        // A maintainer's audit view holds only its team's events.
        let events: serde_json::Value = c
            .get(format!("{}/api/v1/audit?limit=1000", s.url))
            .bearer_auth(&tokens[2])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!events.as_array().unwrap().is_empty());
        for e in events.as_array().unwrap() {
            assert_eq!(e["team"], "team-a", "{e}");
        }
    });
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn revocation_takes_effect_on_the_next_request() {
    let s = Server::with_workspace();
    let t = token(&s, "team-a", "maintainer");
    let who: serde_json::Value =
        serde_json::from_str(&s.ok(&t, &["whoami", "-o", "json"])).unwrap();
    let id = who["token_id"].as_str().unwrap().to_string();
    assert_eq!(who["role"], "maintainer");
    // Bad tokens: unknown, garbage, right id with a wrong secret.
    for bad in [
        "nope",
        "plt_000000000000_deadbeef",
        &format!("plt_{id}_{}", "0".repeat(64)),
    ] {
        let (code, _, err) = s.cli(bad, &["whoami"]);
        assert_eq!(code, 4, "{bad}: {err}");
        assert!(err.contains("unauthenticated"), "{err}");
    }
    s.ok(ADMIN, &["token", "revoke", &id]);
    let (code, _, err) = s.cli(&t, &["get", "queues"]);
    assert_eq!(code, 4, "revoked token must fail at once: {err}");
    assert!(err.contains("was revoked"), "{err}");
    // The revocation is in the audit log, and the token list shows it.
    let log = s.ok(ADMIN, &["audit", "log", "--action", "token.revoke"]);
    assert!(log.contains(&format!("Token/{id}")), "{log}");
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(ADMIN, &["token", "list", "-o", "json"])).unwrap();
    let rec = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap();
    assert!(rec["revoked_at"].is_string());
    // Secrets never leave the server after creation.
    assert!(!serde_json::to_string(&list).unwrap().contains("hash"));
}

#[test]
fn maintainer_cannot_mint_tokens_beyond_its_team_or_role() {
    let s = Server::with_workspace();
    let m = token(&s, "team-a", "maintainer");
    let (code, _, err) = s.cli(
        &m,
        &["token", "create", "--team", "team-a", "--role", "admin"],
    );
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = s.cli(
        &m,
        &["token", "create", "--team", "team-b", "--role", "viewer"],
    );
    assert_eq!(code, 4, "{err}");
    let out = s.ok(
        &m,
        &["token", "create", "--team", "team-a", "--role", "member"],
    );
    assert!(out.contains("plt_"), "{out}");
    let (code, _, err) = s.cli(
        ADMIN,
        &[
            "token",
            "create",
            "--team",
            "no-such-team",
            "--role",
            "viewer",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("Team \"no-such-team\" does not exist"),
        "{err}"
    );
}

#[test]
fn login_saves_server_and_token_for_later_commands() {
    let s = Server::with_workspace();
    let config = s.data_dir.join("login-config");
    let run = |args: &[&str], with_env: bool| {
        let mut cmd = std::process::Command::new(common::bin());
        cmd.args(args)
            .env("PLINTH_CONFIG_DIR", &config)
            .env_remove("PLINTH_SERVER")
            .env_remove("PLINTH_TOKEN");
        if with_env {
            cmd.env("PLINTH_SERVER", &s.url).env("PLINTH_TOKEN", ADMIN);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A wrong token is not saved.
    let (code, _, err) = run(
        &[
            "login",
            "--server",
            &s.url,
            "--token",
            "wrong-token-wrong-token",
        ],
        false,
    );
    assert_eq!(code, 4, "{err}");
    assert!(!config.join("credentials.json").exists());
    let (code, out, err) = run(&["login"], true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("as bootstrap-admin (role admin"), "{out}");
    let (code, out, err) = run(&["get", "queues"], false);
    assert_eq!(code, 0, "saved credentials are used: {err}");
    assert!(out.contains("queue-a"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(config.join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "credentials must not be readable by others"
        );
    }
    // No server at all: exit 7 with the address in the message.
    let (code, _, err) = run(&["get", "pools", "--server", "http://127.0.0.1:9"], false);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
}
