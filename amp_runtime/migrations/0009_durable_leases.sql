-- Durable worker leases: which peer on a shared (PostgreSQL) store runs each instance. The owner
-- renews `expires_at` every `[registry] heartbeat_s`; a peer takes an absent or expired lease by
-- compare-and-set. Unused by a single process on DuckDB (it owns every instance).
CREATE TABLE durable_leases (
    worker     VARCHAR PRIMARY KEY,   -- "templateId.workerName", as in durable_workers
    owner      VARCHAR NOT NULL,      -- the owning process's peer id (new at each start)
    owner_url  VARCHAR NOT NULL,      -- where that process answers HTTP: requests are forwarded there
    expires_at TIMESTAMPTZ NOT NULL
);
