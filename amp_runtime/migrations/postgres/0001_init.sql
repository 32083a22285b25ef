-- PostgreSQL twin of ../0001_init.sql.
CREATE TABLE runtime_starts (
    started_at TIMESTAMP NOT NULL,
    version    VARCHAR NOT NULL
);
