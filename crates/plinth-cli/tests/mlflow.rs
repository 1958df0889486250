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
