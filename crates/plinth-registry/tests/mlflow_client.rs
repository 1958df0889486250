//! The official `mlflow` Python client (3.17.2) against the router, then checks of what the
//! store holds. The client comes from the test virtualenv `target/py` that `scripts/test`
//! builds from `tests/python/requirements.txt`. Set `PLINTH_SKIP_MLFLOW_CLIENT=1` to skip where
//! there is no such virtualenv.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{MEMBER_TOKEN, start};
use plinth_store::tracking::{RunSearch, ViewType, parse_filter};
use sha2::{Digest as _, Sha256};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test virtualenv's python (`target/py`, made by `scripts/test` from
/// `tests/python/requirements.txt`, which pins the mlflow client).
async fn mlflow_python() -> PathBuf {
    let python = workspace_root().join("target/py/bin/python");
    let ready = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import mlflow, sys; sys.exit(0 if mlflow.__version__ == '3.17.2' else 1)",
        ])
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ready,
        "{} with mlflow 3.17.2 is missing: run scripts/test (its python env stage installs it), \
         or set PLINTH_SKIP_MLFLOW_CLIENT=1",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_mlflow_client_flow() {
    if std::env::var("PLINTH_SKIP_MLFLOW_CLIENT").as_deref() == Ok("1") {
        eprintln!("skipped: PLINTH_SKIP_MLFLOW_CLIENT=1");
        return;
    }
    let python = mlflow_python().await;
    let srv = start(None, None).await;
    let out_dir = tempfile::TempDir::new().unwrap();
    let out = out_dir.path().join("result.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mlflow_client_flow.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&out)
        .current_dir(out_dir.path())
        .env("MLFLOW_TRACKING_URI", format!("http://{}", srv.addr))
        .env("MLFLOW_TRACKING_TOKEN", MEMBER_TOKEN)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the mlflow client flow failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let s = &srv.store;

    // Tracking: three finished runs with their params, metric histories and tags.
    let exp = s
        .get_experiment_by_name("plinth-mlflow-flow")
        .await
        .unwrap();
    assert_eq!(exp.experiment_id, result["experiment_id"].as_str().unwrap());
    let page = s
        .search_runs(&RunSearch {
            experiment_ids: vec![exp.experiment_id.clone()],
            filter: parse_filter("tags.team = 'vision'").unwrap(),
            view: ViewType::ActiveOnly,
            max_results: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    for run in &page.items {
        assert_eq!(run.info.status, "FINISHED");
        assert_eq!(run.info.user_id, "member-bot");
        assert!(run.info.end_time.is_some());
        assert!(
            run.data
                .params
                .iter()
                .any(|p| p.key == "layers" && p.value == "4")
        );
        assert_eq!(
            s.metric_history(&run.info.run_id, "acc")
                .await
                .unwrap()
                .len(),
            5
        );
        let acc = run.data.metrics.iter().find(|m| m.key == "acc").unwrap();
        assert_eq!(acc.step, 4);
    }
    let best = result["best_run_id"].as_str().unwrap();
    let run = s.get_run(best).await.unwrap();
    assert!(
        run.data
            .tags
            .iter()
            .any(|t| t.key == "mlflow.runName" && t.value == "trial-2")
    );
    // The lr of the first run kept its first value despite the attempted change.
    let first = s
        .get_run(result["run_ids"][0].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        first
            .data
            .params
            .iter()
            .any(|p| p.key == "lr" && p.value == "0.1")
    );

    // Artifacts: recorded with the sha256 of their content, bytes in the blob store.
    let weights: Vec<u8> = (0..40).flat_map(|_| 0u8..=255).collect();
    let path = format!("{}/{best}/artifacts/model/weights.bin", exp.experiment_id);
    let entry = s.get_artifact(&path).await.unwrap().unwrap();
    assert_eq!(
        entry.digest,
        format!("sha256:{}", hex::encode(Sha256::digest(&weights)))
    );
    assert_eq!(entry.size, weights.len() as i64);

    // Registry: version 1 of the model from the best run, in Production, alias removed.
    let mv = s.get_model_version("plinth-flow-model", "1").await.unwrap();
    assert_eq!(mv.run_id, best);
    assert_eq!(mv.current_stage, "Production");
    assert!(mv.aliases.is_empty());
    assert_eq!(mv.description, "best of three");
    let rm = s.get_registered_model("plinth-flow-model").await.unwrap();
    assert_eq!(rm.latest_versions.len(), 1);
}
