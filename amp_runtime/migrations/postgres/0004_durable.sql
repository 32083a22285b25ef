-- PostgreSQL twin of ../0004_durable.sql: BLOB is BYTEA.
-- Durable workers: template versions, instances with their state, the oplog, invocations,
-- invocation keys and promises. `worker` is the textual id "templateId.workerName".
-- No primary keys: a worker deleted and re-created in one group commit must not trip DuckDB's
-- index checks; the write functions check uniqueness themselves.
CREATE TABLE durable_template_versions (
    template_id    VARCHAR NOT NULL,
    name           VARCHAR NOT NULL,
    version        INTEGER NOT NULL,   -- +1 each time the exported interface changes
    interface_hash VARCHAR NOT NULL,
    created_at     TIMESTAMP NOT NULL
);

CREATE TABLE durable_workers (
    worker           VARCHAR NOT NULL,
    template_id      VARCHAR NOT NULL,
    name             VARCHAR NOT NULL,
    template_version INTEGER NOT NULL,
    args             VARCHAR NOT NULL, -- JSON list of strings
    env              VARCHAR NOT NULL, -- JSON object
    status           VARCHAR NOT NULL, -- the resting status: Idle, Interrupted or Failed
    retry_count      INTEGER NOT NULL,
    state            BYTEA NOT NULL,   -- msgspec JSON of the template object's public fields
    created_at       TIMESTAMP NOT NULL
);

CREATE TABLE durable_oplog (
    worker VARCHAR NOT NULL,
    idx    BIGINT NOT NULL,            -- per worker, increasing; invocations and promises use it as id
    kind   VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,           -- JSON object
    logged_at TIMESTAMP NOT NULL
);

CREATE TABLE durable_invocations (
    worker         VARCHAR NOT NULL,
    seq            BIGINT NOT NULL,    -- the oplog idx of its "invoke" entry: arrival order
    invocation_key VARCHAR,
    function       VARCHAR NOT NULL,
    params         VARCHAR NOT NULL,   -- JSON list, as sent
    convention     VARCHAR NOT NULL,
    outcome        VARCHAR NOT NULL,   -- pending, ok or error
    result         VARCHAR,            -- JSON list when ok
    error          VARCHAR,
    accepted_at    TIMESTAMP NOT NULL,
    finished_at    TIMESTAMP
);

CREATE TABLE durable_keys (
    worker         VARCHAR NOT NULL,
    invocation_key VARCHAR NOT NULL,
    created_at     TIMESTAMP NOT NULL
);

CREATE TABLE durable_promises (
    worker         VARCHAR NOT NULL,
    idx            BIGINT NOT NULL,    -- the oplog idx of its "promise" entry: the promise id
    invocation_seq BIGINT NOT NULL,    -- created by this invocation ...
    ordinal        INTEGER NOT NULL,   -- ... as its n-th promise: a re-run gets the same one back
    completed      BOOLEAN NOT NULL,
    data           VARCHAR,            -- JSON list of bytes
    completed_at   TIMESTAMP
);
