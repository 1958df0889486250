-- Plinth store schema, version 5 (SQLite): the inference gateway's limit windows, shared by the
-- gateways that run on one store. One row per deployment, limit, subject (team or key id) and
-- fixed window (Unix seconds, aligned to the window length). `requests` counts admissions
-- reserved by every gateway (it may pass the limit: a gateway takes only what is left), `tokens`
-- and `spend` what the requests used. Rows of ended windows are deleted by the gateways.
CREATE TABLE gateway_limit_windows (
    deployment    TEXT NOT NULL,
    -- `{index}:{scope}:{windowSeconds}` of the limit in the deployment's `limits`.
    limit_key     TEXT NOT NULL,
    subject       TEXT NOT NULL,
    window_start  INTEGER NOT NULL,
    window_end    INTEGER NOT NULL,
    requests      INTEGER NOT NULL,
    tokens        INTEGER NOT NULL,
    spend         REAL NOT NULL,
    PRIMARY KEY (deployment, limit_key, subject, window_start)
);
CREATE INDEX gateway_limit_windows_end ON gateway_limit_windows (window_end);
