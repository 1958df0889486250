-- Plinth store schema, version 4 (PostgreSQL): metered usage, the input of the cost engine. One row
-- per interval of one workload on one pool: a job attempt (source `job`, id
-- `job/<name>/attempt/<n>`) or a serving replica's interval (source `gateway`). Stored once per
-- (source, id): reporting the same interval again changes nothing. Times are RFC 3339 UTC
-- strings with microseconds (they sort as text).
CREATE TABLE usage_records (
    source            TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    -- `job` or `serving`.
    workload          TEXT COLLATE "C" NOT NULL,
    -- The job's or the deployment's name.
    workload_name     TEXT COLLATE "C" NOT NULL,
    -- The attempt number of a job (1, 2, ...); 0 for serving.
    attempt           BIGINT NOT NULL,
    pool              TEXT COLLATE "C" NOT NULL,
    -- `on_demand`, `reserved` or `spot`.
    procurement       TEXT COLLATE "C" NOT NULL,
    start_at          TEXT COLLATE "C" NOT NULL,
    end_at            TEXT COLLATE "C" NOT NULL,
    -- Resources reserved and used on average over the interval: GPUs, CPU cores, memory GiB.
    request_gpus      DOUBLE PRECISION NOT NULL,
    request_cpus      DOUBLE PRECISION NOT NULL,
    request_memory    DOUBLE PRECISION NOT NULL,
    usage_gpus        DOUBLE PRECISION NOT NULL,
    usage_cpus        DOUBLE PRECISION NOT NULL,
    usage_memory      DOUBLE PRECISION NOT NULL,
    -- A JSON object of the attribution tags (team, project, env, model, owner, ...).
    tags              TEXT COLLATE "C" NOT NULL,
    model_version     TEXT COLLATE "C",
    inferences        BIGINT NOT NULL,
    -- Why a job attempt ended (completed, failed, preempted, ...).
    end_reason        TEXT COLLATE "C",
    recorded_at       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE INDEX usage_records_end ON usage_records (end_at);
CREATE INDEX usage_records_start ON usage_records (start_at);
