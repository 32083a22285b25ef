-- The peer directory for task routing: each process on a shared (PostgreSQL) store upserts its
-- row at start and every [registry] heartbeat_s and deletes it when it drains; the others route
-- tasks to the rows heard from within [registry] liveness_s. Times are epoch seconds on the
-- database server's clock, so peers on machines with skewed clocks agree. Unused on DuckDB.
CREATE TABLE peers (
    peer_id      VARCHAR PRIMARY KEY, -- uuid4 hex, new at each start of a process
    url          VARCHAR NOT NULL,    -- where the other peers reach it ([cluster] advertise_url)
    workers      VARCHAR NOT NULL,    -- JSON list of {id, groups, slots, max_queue}
    started_at   DOUBLE NOT NULL,
    heartbeat_at DOUBLE NOT NULL
);
