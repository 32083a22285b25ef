-- Foundation: facts about the process that survive restarts.
CREATE TABLE runtime_starts (
    started_at TIMESTAMP NOT NULL,
    version    VARCHAR NOT NULL
);
