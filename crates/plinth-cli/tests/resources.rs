//! End-to-end: apply / get / describe / delete round trips through the real binary, dry runs,
//! atomic rejection of invalid input, and exit codes.

mod common;

use common::{ADMIN, Server, WORKSPACE, write};

#[test]
fn apply_get_describe_delete_round_trip() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let ws = write(dir.path(), "ws/all.yaml", WORKSPACE);

    let out = s.ok(
        ADMIN,
        &["apply", "-f", dir.path().join("ws").to_str().unwrap()],
    );
    for line in [
        "pool/gpu-a created",
        "team/team-a created",
        "team/team-b created",
        "queue/queue-a created",
        "queue/queue-b created",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // Idempotent: the same documents change nothing.
    let out = s.ok(ADMIN, &["apply", "-f", &ws]);
    assert_eq!(out.matches("unchanged").count(), 5, "{out}");

    // get: a table for people, JSON for scripts.
    let table = s.ok(ADMIN, &["get", "pools"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("gpu-a") && table.contains("8x nvidia-h100") && table.contains("spot"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(ADMIN, &["get", "queue", "queue-a", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["team"], "team-a");
    assert_eq!(json["spec"]["quotas"][0]["gpus"], 8.0);
    assert_eq!(json["status"]["generation"], 1);
    assert_eq!(json["status"]["team"], "team-a");
    let yaml = s.ok(ADMIN, &["get", "teams", "-o", "yaml"]);
    assert!(
        yaml.contains("name: team-a") && yaml.contains("name: team-b"),
        "{yaml}"
    );

    // Dry run shows the diff and stores nothing.
    let changed = WORKSPACE.replace("{pool: gpu-a, gpus: 8}]}\n---\napiVersion: plinth/v1\nkind: Queue\nmetadata: {name: queue-b}", "{pool: gpu-a, gpus: 6}]}\n---\napiVersion: plinth/v1\nkind: Queue\nmetadata: {name: queue-b}");
    assert_ne!(changed, WORKSPACE);
    let ws2 = write(dir.path(), "ws2.yaml", &changed);
    let out = s.ok(ADMIN, &["apply", "-f", &ws2, "--dry-run"]);
    assert!(out.contains("queue/queue-a configured (dry run)"), "{out}");
    assert!(out.contains("~ spec.quotas"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(ADMIN, &["get", "queue", "queue-a", "-o", "json"])).unwrap();
    assert_eq!(
        json["spec"]["quotas"][0]["gpus"], 8.0,
        "a dry run must not store"
    );

    let out = s.ok(ADMIN, &["apply", "-f", &ws2]);
    assert!(out.contains("queue/queue-a configured"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(ADMIN, &["get", "queue", "queue-a", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["quotas"][0]["gpus"], 6.0);
    assert_eq!(json["status"]["generation"], 2);

    let out = s.ok(ADMIN, &["describe", "queue", "queue-a"]);
    assert!(
        out.contains("Generation:  2")
            && out.contains("resource.update")
            && out.contains("resource.create"),
        "{out}"
    );

    // A team still referenced by a queue cannot be deleted.
    let (code, _, err) = s.cli(ADMIN, &["delete", "team", "team-a"]);
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("Team/team-a is still referenced by Queue/queue-a"),
        "{err}"
    );

    let out = s.ok(ADMIN, &["delete", "queue", "queue-a", "--dry-run"]);
    assert!(out.contains("(dry run)"), "{out}");
    s.ok(ADMIN, &["get", "queue", "queue-a"]);
    s.ok(ADMIN, &["delete", "queue", "queue-a"]);
    let (code, _, err) = s.cli(ADMIN, &["get", "queue", "queue-a"]);
    assert_eq!(code, 5, "not found exits 5: {err}");
    assert!(err.contains("Queue \"queue-a\" not found"), "{err}");
    s.ok(ADMIN, &["delete", "team", "team-a"]);
}

#[test]
fn one_invalid_document_rejects_the_whole_apply() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "d/1-good.yaml",
        "apiVersion: plinth/v1\nkind: Team\nmetadata: {name: fine}\nspec: {}\n",
    );
    let _bad = write(
        dir.path(),
        "d/2-bad.yaml",
        "apiVersion: plinth/v1\nkind: Team\nmetadata: {name: other}\n---\napiVersion: plinth/v1\nkind: Pool\nmetadata: {name: p}\nspec: {nodes: many, cpusPerNode: 1, memoryGibPerNode: 1}\n",
    );
    let (code, _, err) = s.cli(
        ADMIN,
        &["apply", "-f", dir.path().join("d").to_str().unwrap()],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("2-bad.yaml: document 2 (Pool/p): spec.nodes: invalid type: string \"many\", expected u32"), "{err}");
    let (code, _, _) = s.cli(ADMIN, &["get", "team", "fine"]);
    assert_eq!(code, 5, "nothing from a rejected apply may be stored");
    // A reference to a team that does not exist is also rejected, atomically.
    let q = write(
        dir.path(),
        "q.yaml",
        "apiVersion: plinth/v1\nkind: Team\nmetadata: {name: t1}\n---\napiVersion: plinth/v1\nkind: Queue\nmetadata: {name: q1}\nspec: {team: nobody}\n",
    );
    let (code, _, err) = s.cli(ADMIN, &["apply", "-f", &q]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("q.yaml: document 2 (Queue/q1): spec.team: Team \"nobody\" does not exist"),
        "{err}"
    );
    assert_eq!(s.cli(ADMIN, &["get", "team", "t1"]).0, 5);
    // Malformed YAML names the file and document.
    let m = write(dir.path(), "m.yaml", "apiVersion: plinth/v1\nkind: [Team\n");
    let (code, _, err) = s.cli(ADMIN, &["apply", "-f", &m]);
    assert_eq!(code, 3);
    assert!(err.contains("m.yaml: document 1: invalid YAML"), "{err}");
    // The good file alone applies fine afterwards: the server kept serving.
    assert!(
        s.ok(ADMIN, &["apply", "-f", &good])
            .contains("team/fine created")
    );
}

#[test]
fn bad_input_over_http_is_a_json_4xx_and_changes_nothing() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let post = |body: &'static str, ct: &'static str| {
            c.post(format!("{}/api/v1/apply", s.url)).bearer_auth(ADMIN).header("content-type", ct).body(body).send()
        };
        let cases: &[(&str, &str, u16, &str)] = &[
            ("kind: [", "application/yaml", 400, "invalid YAML"),
            ("apiVersion: plinth/v1\nkind: Widget\nmetadata: {name: w}\n", "application/yaml", 400, "unknown kind \"Widget\""),
            ("apiVersion: plinth/v1\nkind: Team\nmetadata: {name: t, color: red}\n", "application/yaml", 400, "metadata.color: unknown field"),
            ("apiVersion: plinth/v1\nkind: Team\nmetadata: {name: \"x'; DROP TABLE resources; --\"}\n", "application/yaml", 400, "metadata.name: name"),
            ("apiVersion: plinth/v1\nkind: Team\nmetadata: {name: ../../etc/passwd}\n", "application/yaml", 400, "is invalid"),
            ("{\"documents\": 5}", "application/json", 400, "documents: invalid type"),
            ("not json", "application/json", 400, "invalid JSON body"),
        ];
        for (body, ct, status, needle) in cases {
            let r = post(body, ct).await.unwrap();
            assert_eq!(r.status().as_u16(), *status, "{body}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["code"], "invalid_argument", "{body}: {v}");
            assert!(v["message"].as_str().unwrap().contains(needle), "{body}: {v}");
        }
        let r = c.get(format!("{}/api/v1/resources/teams", s.url)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v.as_array().unwrap().len(), 0, "nothing stored: {v}");
        let r = c.get(format!("{}/api/v1/resources/widgets", s.url)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 400);
    });
}

#[test]
fn up_applies_the_demo_workspace_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env("HOME", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let (mut url, mut token) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("plinth: listening on ") {
            url = Some(u.to_string());
        }
        if let Some(t) = line.strip_prefix("plinth: admin token: ") {
            token = Some(t.to_string());
        }
        if line.contains("press Ctrl-C") {
            break;
        }
    }
    let (url, token) = (url.expect("url printed"), token.expect("token printed"));
    let out = std::process::Command::new(common::bin())
        .args(["get", "pools", "-o", "json"])
        .env("PLINTH_SERVER", &url)
        .env("PLINTH_TOKEN", &token)
        .output()
        .unwrap();
    let pools: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pools[0]["metadata"]["name"], "local");
    assert!(pools[0]["spec"]["cpusPerNode"].as_u64().unwrap() >= 1);
    let out = std::process::Command::new(common::bin())
        .args(["get", "queues", "-o", "json"])
        .env("PLINTH_SERVER", &url)
        .env("PLINTH_TOKEN", &token)
        .output()
        .unwrap();
    let queues: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The workspace's two queues and the spot demo's.
    assert_eq!(queues.as_array().unwrap().len(), 3, "{queues}");
    // The spot demo's job is interrupted once and resumes from its checkpoint.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .env("PLINTH_SERVER", &url)
            .env("PLINTH_TOKEN", &token)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let job = loop {
        let j: serde_json::Value =
            serde_json::from_str(&cli(&["job", "describe", "spot-demo", "-o", "json"]))
                .unwrap_or_default();
        let state = j["status"]["state"].as_str().unwrap_or("").to_string();
        if state == "succeeded" || state == "failed" {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spot-demo never ended: {j:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let reasons: Vec<&str> = job["status"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons, ["interrupted", "completed"], "{job:#}");
    let log = cli(&["job", "logs", "spot-demo"]);
    assert!(log.contains("attempt 2 resumed from step"), "{log}");
    assert!(log.contains("finished 10 steps"), "{log}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "plinth up exits 0 on SIGTERM, got {status}"
    );
    assert!(tmp.path().join("admin-token").exists());
}
