-- Plinth store schema, version 1 (PostgreSQL).
-- Text columns that are compared or sorted use the "C" collation so ordering is bytewise, the
-- same as on SQLite, whatever the database's default locale.

CREATE TABLE objects (
    kind        TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    team        TEXT COLLATE "C",
    document    TEXT   NOT NULL,
    digest      TEXT   NOT NULL,
    generation  BIGINT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL,
    updated_by  TEXT   NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE INDEX objects_kind_team ON objects (kind, team);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    team        TEXT COLLATE "C",
    role        TEXT NOT NULL,
    salt        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  TEXT COLLATE "C"
);

CREATE INDEX tokens_created ON tokens (created_at, id);

CREATE TABLE meta (
    key    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
);

-- seq is assigned by the store (last + 1 inside the write transaction), never by the database.
CREATE TABLE audit_events (
    seq            BIGINT NOT NULL PRIMARY KEY,
    ts             TEXT COLLATE "C" NOT NULL,
    actor          TEXT COLLATE "C" NOT NULL,
    action         TEXT COLLATE "C" NOT NULL,
    kind           TEXT COLLATE "C" NOT NULL,
    name           TEXT COLLATE "C" NOT NULL,
    team           TEXT COLLATE "C",
    before_digest  TEXT,
    after_digest   TEXT,
    detail         TEXT   NOT NULL,
    prev_hash      TEXT   NOT NULL,
    hash           TEXT   NOT NULL
);

CREATE INDEX audit_events_ts ON audit_events (ts);
CREATE INDEX audit_events_actor ON audit_events (actor);
CREATE INDEX audit_events_object ON audit_events (kind, name);
CREATE INDEX audit_events_team ON audit_events (team);
