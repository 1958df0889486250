-- Plinth store schema, version 1 (SQLite).

CREATE TABLE objects (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    team        TEXT,
    document    TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    updated_by  TEXT    NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE INDEX objects_kind_team ON objects (kind, team);

CREATE TABLE tokens (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    team        TEXT,
    role        TEXT NOT NULL,
    salt        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE INDEX tokens_created ON tokens (created_at, id);

CREATE TABLE meta (
    key    TEXT NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
);

-- seq is assigned by the store (last + 1 inside the write transaction), never by the database.
CREATE TABLE audit_events (
    seq            INTEGER NOT NULL PRIMARY KEY,
    ts             TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    team           TEXT,
    before_digest  TEXT,
    after_digest   TEXT,
    detail         TEXT    NOT NULL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);

CREATE INDEX audit_events_ts ON audit_events (ts);
CREATE INDEX audit_events_actor ON audit_events (actor);
CREATE INDEX audit_events_object ON audit_events (kind, name);
CREATE INDEX audit_events_team ON audit_events (team);
