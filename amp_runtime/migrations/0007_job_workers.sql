-- The worker ids that run jobs: a peer on a shared (PostgreSQL) store writes its `[[workers]]`
-- ids here at start, so a job goes only to a worker some peer runs, never to one registered
-- through the workers API by an outside agent. Unused by a single process on DuckDB.
CREATE TABLE job_workers (
    worker_id     VARCHAR PRIMARY KEY,
    first_seen_at TIMESTAMP NOT NULL
);
