-- The same keys as postgres/0006_peer_keys.sql: one process on DuckDB never races itself, but
-- the store functions' `INSERT ... ON CONFLICT` needs the key on both backends (DuckDB >= 1.2
-- handles a key deleted and re-inserted in one transaction, which 0004 had to avoid).
ALTER TABLE registry_workers ADD PRIMARY KEY (id);
ALTER TABLE registry_secrets ADD PRIMARY KEY (name);
ALTER TABLE durable_template_versions ADD PRIMARY KEY (template_id, version);
ALTER TABLE durable_workers ADD PRIMARY KEY (worker);
ALTER TABLE durable_oplog ADD PRIMARY KEY (worker, idx);
ALTER TABLE durable_invocations ADD PRIMARY KEY (worker, seq);
ALTER TABLE durable_keys ADD PRIMARY KEY (worker, invocation_key);
ALTER TABLE durable_promises ADD PRIMARY KEY (worker, idx);
