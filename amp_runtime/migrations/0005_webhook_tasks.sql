-- Accepted webhook tasks and their deliveries: what a 202 promised, so a restart can keep it.
-- Sync and stream tasks never come here. Times are epoch seconds (DOUBLE), as in registry_stats.
-- No primary keys: a task accepted and finished in one group commit must not trip DuckDB's
-- over-eager index checks on UPDATE; the journal writes each id once (ids are uuid4).
CREATE TABLE webhook_tasks (
    id              VARCHAR NOT NULL,
    function        VARCHAR NOT NULL,
    input           VARCHAR NOT NULL,   -- JSON, as decoded from the request
    priority        INTEGER,
    webhook_url     VARCHAR NOT NULL,
    webhook_headers VARCHAR NOT NULL,   -- JSON object: the request's headers (config's are added at send time)
    timeout_s       DOUBLE NOT NULL,
    worker          VARCHAR,            -- the worker the request named; NULL = any worker of `fn_group`
    fn_group        VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,   -- queued until finished: completed, failed, timed_out, cancelled
    result          VARCHAR,            -- JSON of the function's result
    error           VARCHAR,            -- JSON {type, message, traceback?}
    duration_ms     DOUBLE,
    webhook_status  VARCHAR NOT NULL,   -- pending, delivered, failed
    created_at      DOUBLE NOT NULL,
    finished_at     DOUBLE,
    idempotency_key VARCHAR,
    request_fingerprint VARCHAR         -- sha256 of the canonical request body
);

CREATE TABLE webhook_deliveries (
    task_id      VARCHAR NOT NULL,
    attempt      INTEGER NOT NULL,      -- 1, 2, ... per task, across restarts (never reused)
    attempted_at DOUBLE NOT NULL,       -- written before the POST goes out
    status_code  INTEGER,               -- NULL with error NULL: the process died during the attempt
    error        VARCHAR,
    final_status VARCHAR                -- delivered or failed on the attempt that settled the task
);
