"""MLflow 3 logged models through the official client against a Plinth server.

Usage: MLFLOW_TRACKING_URI=... MLFLOW_TRACKING_TOKEN=... python mlflow_logged_models.py OUT.json

Logs a pyfunc model from a run (create, artifact upload, finalize, run outputs, metric on the
model, registration), builds a second model by hand (initialize, params, tags, finalize),
searches, registers from `models:/<model_id>`, loads both models back and predicts, deletes
one. Asserts what the client sees and writes the ids to OUT.json for the caller to check
through Plinth's own routes.
"""

import json
import sys

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input * 2


def main(out_path):
    client = MlflowClient()
    exp_id = mlflow.set_experiment("plinth-logged-models").experiment_id
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_param("lr", "0.1")
        info = mlflow.pyfunc.log_model(
            name="doubler",
            python_model=Doubler(),
            params={"alpha": "0.5"},
            model_type="demo",
            registered_model_name="doubler-model",
        )
        mlflow.log_metric("acc", 0.91, step=3, model_id=info.model_id)
    model_id = info.model_id
    assert model_id.startswith("m-") and len(model_id) == 34, model_id
    assert str(info.registered_model_version) == "1", info.registered_model_version

    m = mlflow.get_logged_model(model_id)
    assert m.status == LoggedModelStatus.READY, m.status
    assert m.name == "doubler", m.name
    assert m.model_type == "demo", m.model_type
    assert m.source_run_id == run.info.run_id, m.source_run_id
    # The client adds the active run's params to the model's.
    assert m.params == {"alpha": "0.5", "lr": "0.1"}, m.params
    assert m.artifact_location == f"mlflow-artifacts:/{exp_id}/models/{model_id}/artifacts", (
        m.artifact_location
    )
    assert [(x.key, x.value, x.step) for x in m.metrics] == [("acc", 0.91, 3)], m.metrics
    # MLflow lists the registered versions on the model.
    # (the server adds the version when it is created; the client appends it again itself)
    versions = json.loads(m.tags["mlflow.modelVersions"])
    assert versions and all(v == {"name": "doubler-model", "version": "1"} for v in versions), (
        m.tags
    )
    files = sorted(f.path for f in client.list_logged_model_artifacts(model_id))
    assert "MLmodel" in files and "python_model.pkl" in files, files

    # The run records the model as its output.
    outputs = client.get_run(run.info.run_id).outputs
    assert [o.model_id for o in outputs.model_outputs] == [model_id], outputs

    # A model built by hand: pending until finalized.
    manual = mlflow.initialize_logged_model(
        name="manual", tags={"stage": "draft", "owner": "a"}, model_type="hand",
        experiment_id=exp_id,
    )
    assert manual.status == LoggedModelStatus.PENDING, manual.status
    client.log_model_params(manual.model_id, {"depth": "4", "width": "8"})
    client.set_logged_model_tags(manual.model_id, {"stage": "final"})
    client.delete_logged_model_tag(manual.model_id, "owner")
    done = mlflow.finalize_logged_model(manual.model_id, LoggedModelStatus.READY)
    assert done.status == LoggedModelStatus.READY, done.status
    got = mlflow.get_logged_model(manual.model_id)
    assert got.params == {"depth": "4", "width": "8"}, got.params
    own = {k: v for k, v in got.tags.items() if not k.startswith("mlflow.")}
    assert own == {"stage": "final"}, got.tags  # the client adds mlflow.source.* tags
    try:
        client.log_model_params(manual.model_id, {"depth": "5"})
        raise AssertionError("changing a logged model param was accepted")
    except MlflowException as e:
        assert e.error_code == "INVALID_PARAMETER_VALUE", e.error_code

    # Searches.
    names = [x.name for x in mlflow.search_logged_models(
        experiment_ids=[exp_id], output_format="list")]
    assert names == ["manual", "doubler"], names  # newest first
    hits = mlflow.search_logged_models(
        experiment_ids=[exp_id], filter_string="metrics.acc > 0.9", output_format="list")
    assert [x.model_id for x in hits] == [model_id], hits
    hits = mlflow.search_logged_models(
        experiment_ids=[exp_id], filter_string="params.depth = '4' AND tags.stage = 'final'",
        output_format="list")
    assert [x.model_id for x in hits] == [manual.model_id], hits
    ordered = mlflow.search_logged_models(
        experiment_ids=[exp_id], order_by=[{"field_name": "creation_timestamp",
                                            "ascending": True}], output_format="list")
    assert [x.name for x in ordered] == ["doubler", "manual"], ordered
    page = client.search_logged_models(experiment_ids=[exp_id], max_results=1)
    assert len(page) == 1 and page.token, page

    # Register from the logged model itself and load it back three ways.
    mv = mlflow.register_model(f"models:/{model_id}", "doubler-from-id")
    assert mv.version == "1" and mv.source == f"models:/{model_id}", mv
    assert mv.run_id == run.info.run_id, mv.run_id
    frame = pd.DataFrame({"x": [1, 2]})
    for uri in (f"models:/{model_id}", "models:/doubler-from-id/1", "models:/doubler-model/1"):
        pred = mlflow.pyfunc.load_model(uri).predict(frame)
        assert list(pred["x"]) == [2, 4], (uri, pred)

    # Delete the hand-made model: gone from gets and searches.
    client.delete_logged_model(manual.model_id)
    try:
        mlflow.get_logged_model(manual.model_id)
        raise AssertionError("a deleted logged model is still returned")
    except MlflowException as e:
        assert e.error_code == "RESOURCE_DOES_NOT_EXIST", e.error_code
    names = [x.name for x in mlflow.search_logged_models(
        experiment_ids=[exp_id], output_format="list")]
    assert names == ["doubler"], names

    with open(out_path, "w") as f:
        json.dump({"experiment_id": exp_id, "run_id": run.info.run_id, "model_id": model_id,
                   "manual_id": manual.model_id}, f)


if __name__ == "__main__":
    main(sys.argv[1])
