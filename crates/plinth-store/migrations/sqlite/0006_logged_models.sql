-- Plinth store schema, version 6 (SQLite): MLflow 3 logged models and the model a registered
-- version comes from. Times are milliseconds since the Unix epoch.

-- A logged model: `m-<32 hex>`, its artifacts under `<experiment>/models/<id>/artifacts`.
CREATE TABLE mlflow_logged_models (
    model_id               TEXT    NOT NULL PRIMARY KEY,
    experiment_id          INTEGER NOT NULL,
    name                   TEXT    NOT NULL,
    artifact_location      TEXT    NOT NULL,
    creation_timestamp     INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    -- LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED.
    status                 TEXT    NOT NULL,
    status_message         TEXT    NOT NULL,
    model_type             TEXT    NOT NULL,
    source_run_id          TEXT    NOT NULL,
    -- The Plinth token name that created it.
    creator                TEXT    NOT NULL,
    lifecycle_stage        TEXT    NOT NULL
);

CREATE INDEX mlflow_logged_models_experiment
    ON mlflow_logged_models (experiment_id, creation_timestamp DESC, model_id);
CREATE INDEX mlflow_logged_models_run ON mlflow_logged_models (source_run_id);

CREATE TABLE mlflow_logged_model_params (
    model_id TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE mlflow_logged_model_tags (
    model_id TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

-- Metric values logged with a model_id (`mlflow.log_metric(..., model_id=...)`).
CREATE TABLE mlflow_logged_model_metrics (
    model_id       TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    step           INTEGER NOT NULL,
    timestamp      INTEGER NOT NULL,
    value          REAL    NOT NULL,
    run_id         TEXT    NOT NULL,
    dataset_name   TEXT    NOT NULL,
    dataset_digest TEXT    NOT NULL
);

CREATE INDEX mlflow_logged_model_metrics_model ON mlflow_logged_model_metrics (model_id, key, step);

-- A run's outputs (`runs/outputs`): the models it produced, at which step.
CREATE TABLE mlflow_run_outputs (
    run_id   TEXT    NOT NULL,
    model_id TEXT    NOT NULL,
    step     INTEGER NOT NULL,
    PRIMARY KEY (run_id, model_id)
);

-- The logged model a version was registered from ('' when none).
ALTER TABLE mlflow_model_versions ADD COLUMN model_id TEXT NOT NULL DEFAULT '';

-- Artifact retention asks which paths still refer to a blob before deleting it.
CREATE INDEX mlflow_artifacts_digest ON mlflow_artifacts (digest);
