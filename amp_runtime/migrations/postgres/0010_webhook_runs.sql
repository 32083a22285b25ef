-- PostgreSQL twin of ../0010_webhook_runs.sql: DOUBLE is DOUBLE PRECISION.
-- One row each time a webhook task begins to run, written before its function is called. An
-- unfinished task's rows count the runs its process did not survive, so a task that ends the
-- process runs again at most `[tasks] crash_retries` times, then its failure is delivered.
CREATE TABLE webhook_runs (
    task_id    VARCHAR NOT NULL,
    started_at DOUBLE PRECISION NOT NULL
);
