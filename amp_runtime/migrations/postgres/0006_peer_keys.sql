-- Keys for peers: every process with the same store URL writes these tables, so the database,
-- not a check in one process's memory, decides that a logical row exists once. The store
-- functions insert with ON CONFLICT or under a transaction-scoped advisory lock.
ALTER TABLE registry_workers ADD PRIMARY KEY (id);
ALTER TABLE registry_secrets ADD PRIMARY KEY (name);
ALTER TABLE durable_template_versions ADD PRIMARY KEY (template_id, version);
ALTER TABLE durable_workers ADD PRIMARY KEY (worker);
ALTER TABLE durable_oplog ADD PRIMARY KEY (worker, idx);
ALTER TABLE durable_invocations ADD PRIMARY KEY (worker, seq);
ALTER TABLE durable_keys ADD PRIMARY KEY (worker, invocation_key);
ALTER TABLE durable_promises ADD PRIMARY KEY (worker, idx);
