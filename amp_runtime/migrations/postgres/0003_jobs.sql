-- PostgreSQL twin of ../0003_jobs.sql: job_transitions gets an explicit rowid (DuckDB has it built in).
-- Jobs: records, their per-table progress, and the history of their status transitions.
-- No foreign keys: DuckDB makes deleting referenced rows awkward; deletes clean all three tables.
CREATE TABLE job_ids (
    last_id BIGINT NOT NULL          -- the persisted id sequence: ids only ever increase
);
INSERT INTO job_ids VALUES (0);

CREATE TABLE jobs (
    id           BIGINT PRIMARY KEY,
    dataset      VARCHAR NOT NULL,   -- "namespace/name@version"
    start_block  BIGINT NOT NULL,
    end_block    BIGINT,             -- inclusive; NULL = continuous
    node_id      VARCHAR NOT NULL,
    status       VARCHAR NOT NULL,
    batch_blocks BIGINT NOT NULL,    -- fixed at creation so a resumed job keeps its file grid
    error        VARCHAR,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);

CREATE TABLE job_progress (
    job_id           BIGINT NOT NULL,
    table_name       VARCHAR NOT NULL,
    files_count      BIGINT NOT NULL,
    total_size_bytes BIGINT NOT NULL,
    start_block      BIGINT NOT NULL,
    current_block    BIGINT NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (job_id, table_name)
);

CREATE TABLE job_transitions (
    job_id      BIGINT NOT NULL,
    from_status VARCHAR NOT NULL,
    to_status   VARCHAR NOT NULL,
    changed_at  TIMESTAMP NOT NULL,
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY  -- DuckDB's implicit rowid: insertion order for equal changed_at
);
