-- PostgreSQL twin of ../0002_registry.sql: DOUBLE is DOUBLE PRECISION.
-- Worker registry: one row per worker ever known (never deleted, so created_at survives
-- re-registration), machine-stats and activity time series, and the generated JWT secret.
-- No primary key on registry_workers: rows are replaced by delete + insert guarded by `version`,
-- which DuckDB handles inside one group-commit transaction without index conflicts.
CREATE TABLE registry_workers (
    id             VARCHAR NOT NULL,
    version        BIGINT NOT NULL,      -- actor-wide change counter: a stale snapshot never wins
    created_at     TIMESTAMP NOT NULL,
    registered_at  TIMESTAMP NOT NULL,
    heartbeat_at   TIMESTAMP NOT NULL,
    last_report_at TIMESTAMP,
    registered     BOOLEAN NOT NULL,
    timeout_s      BIGINT NOT NULL,
    info           VARCHAR NOT NULL,     -- JSON {version, commit_sha, commit_timestamp, build_date}
    ip             VARCHAR,
    tags           VARCHAR[] NOT NULL,
    system_tags    VARCHAR[] NOT NULL,
    queues         VARCHAR[] NOT NULL,
    task           VARCHAR,
    queue          VARCHAR
);

CREATE TABLE registry_stats (
    worker  VARCHAR NOT NULL,
    metric  VARCHAR NOT NULL,
    variant VARCHAR NOT NULL,            -- "0", "1", ... for array metrics; "" for scalars
    ts      DOUBLE PRECISION NOT NULL,         -- epoch seconds of the report
    value   DOUBLE PRECISION NOT NULL
);

CREATE TABLE registry_activity (
    worker   VARCHAR NOT NULL,
    ts       DOUBLE PRECISION NOT NULL,
    has_task BOOLEAN NOT NULL
);

CREATE TABLE registry_secrets (
    name  VARCHAR NOT NULL,
    value VARCHAR NOT NULL
);
