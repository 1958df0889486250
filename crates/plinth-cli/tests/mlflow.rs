//! The official `mlflow` Python client (3.17.2, from the test virtualenv `target/py` that
//! `scripts/test` builds) against the real `plinth serve`, with a Plinth token as
//! `MLFLOW_TRACKING_TOKEN`; then the stored results are read back through the server's own
//! routes. `PLINTH_SKIP_MLFLOW_CLIENT=1` skips the client half where there is no virtualenv.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ADMIN, Server, call, mlflow_command, token};
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Option<PathBuf> {
    if std::env::var("PLINTH_SKIP_MLFLOW_CLIENT").as_deref() == Ok("1") {
        return None;
    }
    let python = workspace_root().join("target/py/bin/python");
    let ok = Command::new(&python)
        .args([
            "-c",
            "import mlflow, sys; sys.exit(0 if mlflow.__version__ == '3.17.2' else 1)",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} with mlflow 3.17.2 is missing: run scripts/test (its python env stage installs it), \
         or set PLINTH_SKIP_MLFLOW_CLIENT=1",
        python.display()
    );
    Some(python)
}

#[test]
fn tokens_and_roles_on_the_mlflow_routes() {
    let server = Server::with_workspace();
    let viewer = token(&server, "team-a", "viewer");
    let member = token(&server, "team-a", "member");
    let create = json!({"name": "roles-check"});
    // No token and a bad token: 401 in MLflow's error shape.
    for tok in ["", "plt_000000000000_bad"] {
        let (status, body) = call(
            &server,
            tok,
            "POST",
            "/api/2.0/mlflow/experiments/create",
            Some(create.clone()),
        );
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error_code"], "UNAUTHENTICATED", "{body}");
    }
    // A viewer reads but cannot write.
    let (status, body) = call(
        &server,
        &viewer,
        "POST",
        "/api/2.0/mlflow/experiments/create",
        Some(create.clone()),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_code"], "PERMISSION_DENIED", "{body}");
    let (status, body) = call(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/experiments/create",
        Some(create.clone()),
    );
    assert_eq!(status, 200, "{body}");
    let id = body["experiment_id"].as_str().unwrap().to_string();
    let (status, body) = call(
        &server,
        &viewer,
        "GET",
        &format!("/api/2.0/mlflow/experiments/get?experiment_id={id}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["experiment"]["name"], "roles-check");
    // Duplicate names and unknown ids answer with MLflow's codes.
    let (status, body) = call(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/experiments/create",
        Some(create),
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("RESOURCE_ALREADY_EXISTS"))
    );
    let (status, body) = call(
        &server,
        ADMIN,
        "GET",
        "/api/2.0/mlflow/runs/get?run_id=0123456789abcdef0123456789abcdef",
        None,
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
}

#[test]
fn official_mlflow_client_against_plinth_serve() {
    let Some(python) = python() else {
        eprintln!("skipped: PLINTH_SKIP_MLFLOW_CLIENT=1");
        return;
    };
    let server = Server::with_workspace();
    let member = token(&server, "team-a", "member");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("result.json");
    let script = workspace_root().join("crates/plinth-registry/tests/python/mlflow_client_flow.py");
    let output = mlflow_command(&python, &script, &server, &member)
        .arg(&out)
        .current_dir(out_dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the mlflow client flow failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let exp = result["experiment_id"].as_str().unwrap();
    let best = result["best_run_id"].as_str().unwrap();

    // Read back through the server, as an admin (another identity than the writer).
    let (status, body) = call(
        &server,
        ADMIN,
        "POST",
        "/api/2.0/mlflow/runs/search",
        Some(json!({
            "experiment_ids": [exp],
            "filter": "metrics.acc > 0.6",
            "order_by": ["metrics.acc DESC"],
        })),
    );
    assert_eq!(status, 200, "{body}");
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{body}");
    assert_eq!(runs[0]["info"]["run_id"], best);
    // The run belongs to the token's name, whatever the client claimed.
    assert_eq!(runs[0]["info"]["user_id"], "team-a-member", "{}", runs[0]);
    let (status, body) = call(
        &server,
        ADMIN,
        "GET",
        &format!("/api/2.0/mlflow/metrics/get-history?run_id={best}&metric_key=acc"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metrics"].as_array().unwrap().len(), 5, "{body}");

    let (status, body) = call(
        &server,
        ADMIN,
        "GET",
        "/api/2.0/mlflow/model-versions/get?name=plinth-flow-model&version=1",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version"]["current_stage"], "Production");
    assert_eq!(body["model_version"]["run_id"], best);

    // The artifacts are on disk under the data dir, content-addressed.
    let blobs = server.data_dir.join("artifacts/blobs/sha256");
    assert!(
        std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0) > 0,
        "no artifact blobs under {}",
        blobs.display()
    );
}

#[test]
fn mlflow3_logged_models_with_the_official_client() {
    let Some(python) = python() else {
        eprintln!("skipped: PLINTH_SKIP_MLFLOW_CLIENT=1");
        return;
    };
    let server = Server::with_workspace();
    let member = token(&server, "team-a", "member");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("result.json");
    let script =
        workspace_root().join("crates/plinth-registry/tests/python/mlflow_logged_models.py");
    let output = mlflow_command(&python, &script, &server, &member)
        .arg(&out)
        .current_dir(out_dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the logged model flow failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let exp = result["experiment_id"].as_str().unwrap();
    let run_id = result["run_id"].as_str().unwrap();
    let model_id = result["model_id"].as_str().unwrap();

    // Read back through the server as an admin: the model, its params, metric and status.
    let body = common::call_ok(
        &server,
        ADMIN,
        "GET",
        &format!("/api/2.0/mlflow/logged-models/{model_id}"),
        None,
    );
    let info = &body["model"]["info"];
    assert_eq!(info["status"], "LOGGED_MODEL_READY", "{body}");
    assert_eq!(info["source_run_id"], run_id);
    assert_eq!(info["experiment_id"], exp);
    assert_eq!(
        info["artifact_uri"],
        format!("mlflow-artifacts:/{exp}/models/{model_id}/artifacts")
    );
    assert_eq!(
        body["model"]["data"]["params"],
        json!([{"key": "alpha", "value": "0.5"}, {"key": "lr", "value": "0.1"}])
    );
    let metric = &body["model"]["data"]["metrics"][0];
    assert_eq!(
        (
            &metric["key"],
            &metric["value"],
            &metric["step"],
            &metric["run_id"]
        ),
        (&json!("acc"), &json!(0.91), &json!(3), &json!(run_id)),
        "{body}"
    );
    // The model's files were stored under the model's own artifact directory.
    let body = common::call_ok(
        &server,
        ADMIN,
        "GET",
        &format!("/api/2.0/mlflow-artifacts/artifacts?path={exp}/models/{model_id}/artifacts"),
        None,
    );
    let files: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"MLmodel"), "{body}");
    // The version registered from the logged model records it, and resolves to its files.
    let body = common::call_ok(
        &server,
        ADMIN,
        "GET",
        "/api/2.0/mlflow/model-versions/get?name=doubler-from-id&version=1",
        None,
    );
    assert_eq!(body["model_version"]["model_id"], model_id, "{body}");
    assert_eq!(body["model_version"]["run_id"], run_id);
    let body = common::call_ok(
        &server,
        ADMIN,
        "GET",
        "/api/2.0/mlflow/model-versions/get-download-uri?name=doubler-from-id&version=1",
        None,
    );
    assert_eq!(
        body["artifact_uri"],
        format!("mlflow-artifacts:/{exp}/models/{model_id}/artifacts")
    );
    // The deleted model is gone unless asked for.
    let manual = result["manual_id"].as_str().unwrap();
    let (status, body) = call(
        &server,
        ADMIN,
        "GET",
        &format!("/api/2.0/mlflow/logged-models/{manual}"),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");
    let body = common::call_ok(
        &server,
        ADMIN,
        "GET",
        &format!("/api/2.0/mlflow/logged-models/{manual}?allow_deleted=true"),
        None,
    );
    assert_eq!(body["model"]["info"]["name"], "manual");
}

#[test]
fn logged_model_routes_check_their_input() {
    let server = Server::with_workspace();
    let member = token(&server, "team-a", "member");
    let viewer = token(&server, "team-a", "viewer");
    let exp = common::call_ok(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/experiments/create",
        Some(json!({"name": "lm-input"})),
    )["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Unknown experiment and run: 404 naming them.
    let (status, body) = call(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/logged-models",
        Some(json!({"experiment_id": "9999"})),
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let (status, body) = call(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/logged-models",
        Some(json!({"experiment_id": exp, "source_run_id": "nope"})),
    );
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    // Viewers may not create.
    let (status, _) = call(
        &server,
        &viewer,
        "POST",
        "/api/2.0/mlflow/logged-models",
        Some(json!({"experiment_id": exp})),
    );
    assert_eq!(status, 403);
    let m = common::call_ok(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/logged-models",
        Some(json!({"experiment_id": exp, "params": [{"key": "a", "value": "1"}]})),
    );
    let id = m["model"]["info"]["model_id"].as_str().unwrap().to_owned();
    assert_eq!(m["model"]["info"]["status"], "LOGGED_MODEL_PENDING");
    assert!(
        m["model"]["info"]["name"]
            .as_str()
            .unwrap()
            .starts_with("model-")
    );
    // A bad status names the allowed ones; a metric for an unknown model stores nothing.
    let (status, body) = call(
        &server,
        &member,
        "PATCH",
        &format!("/api/2.0/mlflow/logged-models/{id}"),
        Some(json!({"status": "DONE"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("LOGGED_MODEL_READY"),
        "{body}"
    );
    let run = common::call_ok(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/runs/create",
        Some(json!({"experiment_id": exp})),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        Some(json!({"run_id": run_id, "metrics": [
            {"key": "x", "value": 1.0, "timestamp": 1, "step": 0, "model_id": "m-missing"}]})),
    );
    assert_eq!(status, 404, "{body}");
    let hist = common::call_ok(
        &server,
        &member,
        "GET",
        &format!("/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=x"),
        None,
    );
    assert_eq!(hist["metrics"].as_array().map(Vec::len), Some(0), "{hist}");
    // A search needs an experiment; an unknown filter attribute is named.
    let (status, body) = call(
        &server,
        &member,
        "POST",
        "/api/2.0/mlflow/logged-models/search",
        Some(json!({"experiment_ids": [exp], "filter": "colour = 'red'"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
}

/// Puts `bytes` at artifact `path` as `tok`.
fn put_artifact(server: &Server, tok: &str, path: &str, bytes: &'static [u8]) {
    let status = common::runtime().block_on(async {
        reqwest::Client::new()
            .put(format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}",
                server.url
            ))
            .bearer_auth(tok)
            .body(bytes)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200, "upload of {path}");
}

/// Yesterday's date (UTC) as YYYY-MM-DD.
fn yesterday() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = secs / 86_400 - 1 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The content digest the server reports for artifact `path` (`x-plinth-digest`).
fn digest_of(server: &Server, tok: &str, path: &str) -> String {
    common::runtime().block_on(async {
        let resp = reqwest::Client::new()
            .get(format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}",
                server.url
            ))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "download of {path}");
        resp.headers()["x-plinth-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

fn blob_exists(server: &Server, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    server
        .data_dir
        .join("artifacts/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .exists()
}

#[test]
fn artifact_retention_deletes_only_unshared_files_of_due_versions() {
    let server = Server::with_workspace();
    let member = token(&server, "team-a", "member");
    let mlflow = |method: &str, path: &str, body: Value| {
        common::call_ok(
            &server,
            &member,
            method,
            &format!("/api/2.0/mlflow/{path}"),
            Some(body),
        )
    };
    let exp = mlflow("POST", "experiments/create", json!({"name": "gc"}))["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let r = mlflow("POST", "runs/create", json!({"experiment_id": exp}));
        runs.push(r["run"]["info"]["run_id"].as_str().unwrap().to_owned());
    }
    let (a, b, c) = (&runs[0], &runs[1], &runs[2]);
    // Run A's model: one file of its own and one whose content run B also holds.
    put_artifact(
        &server,
        &member,
        &format!("{exp}/{a}/artifacts/model/MLmodel"),
        b"model-a",
    );
    put_artifact(
        &server,
        &member,
        &format!("{exp}/{a}/artifacts/model/w.bin"),
        b"shared",
    );
    put_artifact(
        &server,
        &member,
        &format!("{exp}/{b}/artifacts/data/w.bin"),
        b"shared",
    );
    // Run C's model stays in use.
    put_artifact(
        &server,
        &member,
        &format!("{exp}/{c}/artifacts/model/MLmodel"),
        b"model-c",
    );
    let model_a = digest_of(
        &server,
        &member,
        &format!("{exp}/{a}/artifacts/model/MLmodel"),
    );
    let shared = digest_of(&server, &member, &format!("{exp}/{b}/artifacts/data/w.bin"));
    let model_c = digest_of(
        &server,
        &member,
        &format!("{exp}/{c}/artifacts/model/MLmodel"),
    );
    mlflow(
        "POST",
        "registered-models/create",
        json!({"name": "gc-model"}),
    );
    for run in [a, c, a] {
        mlflow(
            "POST",
            "model-versions/create",
            json!({"name": "gc-model", "source": format!("runs:/{run}/model"), "run_id": run}),
        );
    }
    // v1 (run A) archived now; v2 (run C) untouched; v3 (run A again) deprecated long ago.
    mlflow(
        "POST",
        "model-versions/transition-stage",
        json!({"name": "gc-model", "version": "1", "stage": "Archived"}),
    );
    mlflow(
        "POST",
        "model-versions/set-tag",
        json!({"name": "gc-model", "version": "3", "key": "plinth.deprecated",
               "value": format!("sunset {}: replaced", yesterday())}),
    );
    let gc = |body: Value| common::call_ok(&server, ADMIN, "POST", "/api/v1/models:gc", Some(body));

    // Nothing is due under a year: v1 was archived just now, v3's sunset was yesterday.
    let r = gc(json!({"retention": "365d"}));
    assert_eq!(r["versions"], json!([]), "{r}");
    // Under one millisecond both are due; a dry run changes nothing.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = gc(json!({"retention": "1ms", "dryRun": true}));
    let due: Vec<(String, String)> = r["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().into(),
                v["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        due,
        [
            ("1".to_string(), "archived".to_string()),
            ("3".into(), "deprecated".into())
        ],
        "{r}"
    );
    // model-a goes (1 blob, 7 bytes); `shared` stays for run B.
    assert_eq!(
        (r["blobsDeleted"].as_u64(), r["bytesFreed"].as_u64()),
        (Some(1), Some(7)),
        "{r}"
    );
    assert_eq!(r["blobsShared"], 1, "{r}");
    assert!(blob_exists(&server, &model_a));

    // The CLI (admin) does it for real.
    let out = server.ok(ADMIN, &["model", "gc", "--retention", "1ms", "-o", "json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["dryRun"], false);
    assert_eq!(r["versions"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(r["versions"][0]["files"], 2, "{r}");
    assert_eq!(r["blobsDeleted"], 1, "{r}");
    assert!(!blob_exists(&server, &model_a));
    assert!(blob_exists(&server, &shared));
    assert!(blob_exists(&server, &model_c));
    let (status, _) = common::http(
        &server,
        "GET",
        &format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{a}/artifacts/model/MLmodel"),
        common::Auth::Bearer(&member),
        None,
    );
    assert_eq!(status, 404);
    let (status, text) = common::http(
        &server,
        "GET",
        &format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{b}/artifacts/data/w.bin"),
        common::Auth::Bearer(&member),
        None,
    );
    assert_eq!((status, text.as_str()), (200, "shared"));
    // The versions keep their metadata, marked; the collection is audited per version.
    let v1 = common::call_ok(
        &server,
        &member,
        "GET",
        "/api/2.0/mlflow/model-versions/get?name=gc-model&version=1",
        None,
    );
    assert_eq!(v1["model_version"]["current_stage"], "Archived");
    let tag = v1["model_version"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "plinth.artifacts_deleted")
        .unwrap_or_else(|| panic!("no plinth.artifacts_deleted tag: {v1}"));
    assert!(
        tag["value"].as_str().unwrap().contains("archived since"),
        "{tag}"
    );
    let audit = common::call_ok(
        &server,
        ADMIN,
        "GET",
        "/api/v1/audit?action=model.artifacts_delete",
        None,
    );
    let names: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gc-model@1", "gc-model@3"], "{audit}");
    assert_eq!(
        audit[0]["actor"].as_str().map(|a| a.starts_with("token:")),
        Some(true)
    );
    // Collected once: a second pass finds nothing to do.
    let r = gc(json!({"retention": "1ms"}));
    assert_eq!(r["versions"], json!([]), "{r}");
    assert_eq!(r["loggedModels"], json!([]), "{r}");

    // MLflow 3 logged models: a deleted one loses its files after the retention, unless a
    // registered version still uses them; one that is not deleted keeps them.
    let mut logged = Vec::new();
    for (name, content) in [
        ("dropped", &b"dropped-model"[..]),
        ("registered", b"registered-model"),
        ("live", b"live-model"),
    ] {
        let m = mlflow(
            "POST",
            "logged-models",
            json!({"experiment_id": exp, "name": name}),
        );
        let id = m["model"]["info"]["model_id"].as_str().unwrap().to_owned();
        let path = format!("{exp}/models/{id}/artifacts/MLmodel");
        put_artifact(&server, &member, &path, content);
        logged.push((id.clone(), digest_of(&server, &member, &path)));
    }
    mlflow(
        "POST",
        "model-versions/create",
        json!({"name": "gc-model", "source": format!("models:/{}", logged[1].0)}),
    );
    for (id, _) in &logged[..2] {
        let (status, body) = call(
            &server,
            &member,
            "DELETE",
            &format!("/api/2.0/mlflow/logged-models/{id}"),
            None,
        );
        assert_eq!(status, 200, "{body}");
    }
    // Deleted just now: nothing is due under a year.
    let r = gc(json!({"retention": "365d"}));
    assert_eq!(r["loggedModels"], json!([]), "{r}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = gc(json!({"retention": "1ms"}));
    let went: Vec<(&str, u64, u64)> = r["loggedModels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["files"].as_u64().unwrap(),
                m["filesKept"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(went, [("dropped", 1, 0)], "{r}");
    assert!(!blob_exists(&server, &logged[0].1));
    assert!(blob_exists(&server, &logged[1].1), "used by gc-model v4");
    assert!(blob_exists(&server, &logged[2].1), "not deleted");
    let audit = common::call_ok(
        &server,
        ADMIN,
        "GET",
        "/api/v1/audit?action=model.artifacts_delete&kind=LoggedModel",
        None,
    );
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
    assert_eq!(audit[0]["name"], logged[0].0.as_str(), "{audit}");
    let r = gc(json!({"retention": "1ms"}));
    assert_eq!(r["loggedModels"], json!([]), "{r}");

    // Admins only; a bad retention and a missing default are named.
    let (status, _) = call(
        &server,
        &member,
        "POST",
        "/api/v1/models:gc",
        Some(json!({})),
    );
    assert_eq!(status, 403);
    let (status, body) = call(
        &server,
        ADMIN,
        "POST",
        "/api/v1/models:gc",
        Some(json!({"retention": "soon"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("retention:"),
        "{body}"
    );
    let (status, body) = call(&server, ADMIN, "POST", "/api/v1/models:gc", Some(json!({})));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("registry.archived_artifact_retention"),
        "{body}"
    );
}
