"""The official mlflow client against Plinth's MLflow routes.

Run by crates/plinth-registry/tests/mlflow_client.rs with MLFLOW_TRACKING_URI and
MLFLOW_TRACKING_TOKEN set; writes what it created as JSON to the path in argv[1] so the Rust
test can check what the store then holds. Any failed expectation raises and exits non-zero.
"""

import json
import os
import sys
import tempfile

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

EXPERIMENT = "plinth-mlflow-flow"
MODEL = "plinth-flow-model"
WEIGHTS = bytes(range(256)) * 40


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except MlflowException as e:
        assert e.error_code == code, f"expected {code}, got {e.error_code}: {e}"
        return str(e)
    raise AssertionError(f"expected {code} from {fn.__name__}, got success")


def main(out_path):
    mlflow.set_experiment(EXPERIMENT)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    client = MlflowClient()

    run_ids = []
    for i in range(3):
        with mlflow.start_run(run_name=f"trial-{i}") as run:
            mlflow.log_params({"lr": str(0.1 * (i + 1)), "layers": "4"})
            for step in range(5):
                mlflow.log_metrics(
                    {"loss": 1.0 / (step + 1 + i), "acc": 0.5 + 0.1 * i + 0.01 * step},
                    step=step,
                )
            mlflow.log_metric("single", float(i))
            mlflow.set_tag("team", "vision")
            with tempfile.TemporaryDirectory() as d:
                notes = os.path.join(d, "notes.txt")
                with open(notes, "w") as f:
                    f.write(f"run {i}\n")
                mlflow.log_artifact(notes)
                model_dir = os.path.join(d, "model")
                os.makedirs(model_dir)
                with open(os.path.join(model_dir, "MLmodel"), "w") as f:
                    f.write("flavors: {}\n")
                with open(os.path.join(model_dir, "weights.bin"), "wb") as f:
                    f.write(WEIGHTS)
                mlflow.log_artifacts(model_dir, artifact_path="model")
            run_ids.append(run.info.run_id)

    # Params are immutable, as in MLflow.
    expect_error("INVALID_PARAMETER_VALUE", client.log_param, run_ids[0], "lr", "999")
    expect_error("RESOURCE_DOES_NOT_EXIST", client.get_run, "0" * 32)

    found = client.search_runs(
        [exp.experiment_id],
        filter_string="metrics.acc > 0.6 and params.layers = '4' and tags.team = 'vision'",
        order_by=["metrics.acc DESC"],
    )
    got = [r.info.run_id for r in found]
    assert got == [run_ids[2], run_ids[1]], f"search_runs returned {got}, runs were {run_ids}"
    best = found[0]
    assert best.info.status == "FINISHED", best.info.status
    assert best.data.params["lr"] == str(0.1 * 3)
    assert abs(best.data.metrics["acc"] - (0.5 + 0.2 + 0.04)) < 1e-9, best.data.metrics

    hist = client.get_metric_history(best.info.run_id, "loss")
    assert [m.step for m in hist] == [0, 1, 2, 3, 4], hist

    mv = mlflow.register_model(f"runs:/{best.info.run_id}/model", MODEL)
    assert mv.version == "1", mv.version
    expect_error("RESOURCE_ALREADY_EXISTS", client.create_registered_model, MODEL)

    client.set_registered_model_alias(MODEL, "champion", mv.version)
    assert client.get_model_version_by_alias(MODEL, "champion").version == mv.version
    assert client.get_registered_model(MODEL).aliases == {"champion": mv.version}

    client.transition_model_version_stage(MODEL, mv.version, "Production")
    expect_error(
        "INVALID_PARAMETER_VALUE",
        client.transition_model_version_stage,
        MODEL,
        mv.version,
        "Prod",
    )
    latest = client.get_latest_versions(MODEL, stages=["Production"])
    assert [v.version for v in latest] == [mv.version], latest
    found_versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [v.version for v in found_versions] == [mv.version]

    exps = client.search_experiments(filter_string="name LIKE 'plinth-%'")
    assert [e.name for e in exps] == [EXPERIMENT], exps
    models = client.search_registered_models(filter_string=f"name = '{MODEL}'")
    assert [m.name for m in models] == [MODEL], models
    client.update_model_version(MODEL, mv.version, description="best of three")
    assert client.get_model_version(MODEL, mv.version).description == "best of three"
    client.set_experiment_tag(exp.experiment_id, "owner", "vision")
    assert client.get_experiment(exp.experiment_id).tags["owner"] == "vision"

    client.delete_registered_model_alias(MODEL, "champion")
    assert client.get_registered_model(MODEL).aliases == {}

    with tempfile.TemporaryDirectory() as d:
        local = mlflow.artifacts.download_artifacts(
            run_id=best.info.run_id, artifact_path="model", dst_path=d
        )
        with open(os.path.join(local, "weights.bin"), "rb") as f:
            assert f.read() == WEIGHTS
        notes = client.download_artifacts(best.info.run_id, "notes.txt", d)
        with open(notes) as f:
            assert f.read() == "run 2\n"
        names = sorted(a.path for a in client.list_artifacts(best.info.run_id))
        assert names == ["model", "notes.txt"], names
        uri = client.get_model_version_download_uri(MODEL, mv.version)
        assert uri.endswith(f"/{best.info.run_id}/artifacts/model"), uri

    with open(out_path, "w") as f:
        json.dump(
            {
                "experiment_id": exp.experiment_id,
                "run_ids": run_ids,
                "best_run_id": best.info.run_id,
                "model": MODEL,
                "version": mv.version,
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1])
