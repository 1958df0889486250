-- Plinth store schema, version 5 (PostgreSQL): the inference gateway's limit windows, shared by the
-- gateways that run on one store. One row per deployment, limit, subject (team or key id) and
-- fixed window (Unix seconds, aligned to the window length). `requests` counts admissions
-- reserved by every gateway (it may pass the limit: a gateway takes only what is left), `tokens`
-- and `spend` what the requests used. Rows of ended windows are deleted by the gateways.
CREATE TABLE gateway_limit_windows (
    deployment    TEXT COLLATE "C" NOT NULL,
    -- `{index}:{scope}:{windowSeconds}` of the limit in the deployment's `limits`.
    limit_key     TEXT COLLATE "C" NOT NULL,
    subject       TEXT COLLATE "C" NOT NULL,
    window_start  BIGINT NOT NULL,
    window_end    BIGINT NOT NULL,
    requests      BIGINT NOT NULL,
    tokens        BIGINT NOT NULL,
    spend         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (deployment, limit_key, subject, window_start)
);
CREATE INDEX gateway_limit_windows_end ON gateway_limit_windows (window_end);
