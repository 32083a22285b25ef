-- Accepted webhook tasks, their outcomes and their delivery attempts: what a 202 promised, so a
-- restart can keep it. Sync and stream tasks never come here. Append-only on the hot path (each
-- table gets one `INSERT ... unnest` per group commit; UPDATEs would cost a statement per task);
-- rows are deleted only when a task is refused after all, or settled and past retention.
-- Times are epoch seconds (DOUBLE), as in registry_stats. Keyed as 0006 keys the older tables:
-- a task's id, an attempt's begin and answer rows, an outcome's place in write order.
CREATE TABLE webhook_tasks (
    id              VARCHAR PRIMARY KEY, -- uuid4 hex, written once
    function        VARCHAR NOT NULL,
    input           VARCHAR NOT NULL,   -- JSON, as decoded from the request
    priority        INTEGER,
    webhook_url     VARCHAR NOT NULL,
    webhook_headers VARCHAR NOT NULL,   -- JSON object: the request's headers (config's are added at send time)
    timeout_s       DOUBLE NOT NULL,
    worker          VARCHAR,            -- the worker the request named; NULL = any worker of `fn_group`
    fn_group        VARCHAR NOT NULL,
    created_at      DOUBLE NOT NULL,
    idempotency_key VARCHAR,
    request_fingerprint VARCHAR         -- sha256 of the canonical request body
);

-- A task without an outcome is unfinished: it runs again after a restart. The first outcome counts
-- (a second one is possible only when a store write is retried).
CREATE SEQUENCE webhook_outcome_seq;
CREATE TABLE webhook_outcomes (
    seq         BIGINT PRIMARY KEY DEFAULT nextval('webhook_outcome_seq'),  -- write order: the first outcome counts
    task_id     VARCHAR NOT NULL,
    status      VARCHAR NOT NULL,       -- completed, failed, timed_out, cancelled
    result      VARCHAR,                -- JSON of the function's result
    error       VARCHAR,                -- JSON {type, message, traceback?}
    duration_ms DOUBLE,
    finished_at DOUBLE NOT NULL
);

-- Two rows per attempt: one before the POST goes out (answered = false), so attempt numbers are
-- never reused after a crash, and one with its answer. The outcome row stands for the start of
-- attempt 1. A task's delivery is settled once a row carries a final_status.
CREATE TABLE webhook_deliveries (
    task_id      VARCHAR NOT NULL,
    attempt      INTEGER NOT NULL,      -- 1, 2, ... per task, across restarts
    attempted_at DOUBLE NOT NULL,
    answered     BOOLEAN NOT NULL,
    status_code  INTEGER,
    error        VARCHAR,
    final_status VARCHAR,               -- delivered or failed on the attempt that settled the task
    PRIMARY KEY (task_id, attempt, answered)
);
