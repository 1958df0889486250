-- Plinth store schema, version 3 (SQLite): the lineage graph and the OpenLineage run events it
-- was built from. Times are RFC 3339 UTC strings with microseconds (they sort as text).

-- A dataset, job, run or model version. `node_key` is how people and the API name a node:
-- `dataset:NAMESPACE/NAME`, `job:NAMESPACE/NAME`, `run:RUN_ID`, `model:NAME@VERSION`.
CREATE TABLE lineage_nodes (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    node_key   TEXT NOT NULL,
    -- Runs: the state of their newest event other than OTHER.
    state      TEXT,
    -- A JSON object: facet name -> facet.
    facets     TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    UNIQUE (kind, namespace, name)
);

CREATE INDEX lineage_nodes_key ON lineage_nodes (node_key);

-- `input`: dataset -> run (or job); `output`: run (or job) -> dataset; `job`: job -> run;
-- `parent`: parent run -> run.
CREATE TABLE lineage_edges (
    src        INTEGER NOT NULL,
    dst        INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    first_seen TEXT    NOT NULL,
    last_seen  TEXT    NOT NULL,
    PRIMARY KEY (src, dst, kind)
);

CREATE INDEX lineage_edges_dst ON lineage_edges (dst, src);

-- Every accepted run event, as sent, once per (run, type, time).
CREATE TABLE lineage_run_events (
    run_id      TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    event_time  TEXT NOT NULL,
    job_key     TEXT NOT NULL,
    producer    TEXT NOT NULL,
    received_at TEXT NOT NULL,
    received_by TEXT NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (run_id, event_type, event_time)
);

CREATE INDEX lineage_run_events_time ON lineage_run_events (run_id, event_time);
