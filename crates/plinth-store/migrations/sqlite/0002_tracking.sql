-- Plinth store schema, version 2 (SQLite): MLflow-compatible tracking and model registry.
-- Times are milliseconds since the Unix epoch, as MLflow sends them.

CREATE TABLE mlflow_experiments (
    experiment_id     INTEGER NOT NULL PRIMARY KEY,
    name              TEXT    NOT NULL UNIQUE,
    artifact_location TEXT    NOT NULL,
    lifecycle_stage   TEXT    NOT NULL,
    creation_time     INTEGER NOT NULL,
    last_update_time  INTEGER NOT NULL
);

INSERT INTO mlflow_experiments VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active', 0, 0);

CREATE TABLE mlflow_experiment_tags (
    experiment_id INTEGER NOT NULL,
    key           TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE mlflow_runs (
    run_id          TEXT    NOT NULL PRIMARY KEY,
    experiment_id   INTEGER NOT NULL,
    run_name        TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    start_time      INTEGER NOT NULL,
    end_time        INTEGER,
    artifact_uri    TEXT    NOT NULL,
    lifecycle_stage TEXT    NOT NULL
);

CREATE INDEX mlflow_runs_experiment ON mlflow_runs (experiment_id, start_time DESC, run_id);

CREATE TABLE mlflow_params (
    run_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX mlflow_params_key ON mlflow_params (key, value);

CREATE TABLE mlflow_run_tags (
    run_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX mlflow_run_tags_key ON mlflow_run_tags (key, value);

-- Every logged metric value (the history).
CREATE TABLE mlflow_metrics (
    run_id    TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    step      INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    value     REAL    NOT NULL
);

CREATE INDEX mlflow_metrics_run_key ON mlflow_metrics (run_id, key, step, timestamp);

-- The latest value of each metric of each run: the one with the greatest (step, timestamp,
-- value), as MLflow defines it. Search filters and orders on this table.
CREATE TABLE mlflow_latest_metrics (
    run_id    TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    step      INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    value     REAL    NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX mlflow_latest_metrics_key ON mlflow_latest_metrics (key, value);

CREATE TABLE mlflow_registered_models (
    name                   TEXT    NOT NULL PRIMARY KEY,
    creation_timestamp     INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    description            TEXT    NOT NULL,
    user_id                TEXT    NOT NULL,
    -- The highest version number ever given, so deleted numbers are never reused.
    last_version           INTEGER NOT NULL
);

CREATE TABLE mlflow_registered_model_tags (
    name  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
);

CREATE TABLE mlflow_model_versions (
    name                   TEXT    NOT NULL,
    version                INTEGER NOT NULL,
    creation_timestamp     INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    user_id                TEXT    NOT NULL,
    current_stage          TEXT    NOT NULL,
    description            TEXT    NOT NULL,
    source                 TEXT    NOT NULL,
    run_id                 TEXT    NOT NULL,
    run_link               TEXT    NOT NULL,
    status                 TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE INDEX mlflow_model_versions_run ON mlflow_model_versions (run_id);

CREATE TABLE mlflow_model_version_tags (
    name    TEXT    NOT NULL,
    version INTEGER NOT NULL,
    key     TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (name, version, key)
);

CREATE TABLE mlflow_model_aliases (
    name    TEXT    NOT NULL,
    alias   TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
);

-- Artifact paths (relative to the artifact root) and the sha256 of their content; the bytes
-- live in a content-addressed directory outside the database.
CREATE TABLE mlflow_artifacts (
    path       TEXT    NOT NULL PRIMARY KEY,
    digest     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
