"""The official mlflow client meeting Plinth's release gates.

Run twice by crates/plinth-cli/tests/model_lifecycle.rs against the real server, with a
ReleasePolicy for MODEL applied (auc >= 0.8, one approval, production only):

- `register OUT`: logs a run (metrics, the git commit and the dataset as tags), registers it,
  and checks that moving it to Production is refused with INVALID_STATE naming the missing
  approval; writes the run id and version to OUT.
- `promote`: after another maintainer approved, the same transition succeeds and the canary
  alias can be set; both are read back through the client.
"""

import json
import os
import sys
import tempfile

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

MODEL = "gated"


def register(out_path):
    mlflow.set_experiment("gated-training")
    client = MlflowClient()
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_params({"max_depth": "6"})
        mlflow.log_metrics({"auc": 0.91, "latency_p95_ms": 40.0})
        mlflow.set_tag("mlflow.source.git.commit", "feedbeef")
        mlflow.set_tag("plinth.datasets", "s3://bucket/flights.parquet")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "MLmodel"), "w") as f:
                f.write("flavors: {}\n")
            with open(os.path.join(d, "model.bin"), "wb") as f:
                f.write(b"weights")
            mlflow.log_artifacts(d, "model")
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL)
    try:
        client.transition_model_version_stage(MODEL, mv.version, "Production")
    except MlflowException as e:
        assert e.error_code == "INVALID_STATE", e.error_code
        assert "FAIL approvals >= 1" in str(e), str(e)
        assert "PASS metric auc >= 0.8: auc = 0.91" in str(e), str(e)
    else:
        raise AssertionError("an unapproved version reached Production")
    assert client.get_model_version(MODEL, mv.version).current_stage == "None"
    with open(out_path, "w") as f:
        json.dump({"run_id": run.info.run_id, "version": mv.version}, f)


def promote():
    client = MlflowClient()
    mv = client.transition_model_version_stage(MODEL, "1", "Production")
    assert mv.current_stage == "Production", mv.current_stage
    client.set_registered_model_alias(MODEL, "canary", "1")
    assert client.get_model_version_by_alias(MODEL, "canary").version == "1"


if __name__ == "__main__":
    if sys.argv[1] == "register":
        register(sys.argv[2])
    else:
        promote()
