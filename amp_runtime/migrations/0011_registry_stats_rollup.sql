-- Machine stats and activity older than an hour are rolled up into one row per series and minute
-- (registry/store.py `roll_up_stats`), so a worker's rows per day are bounded. A rolled-up row
-- carries its samples' count and extremes; a full-resolution row leaves them NULL (value alone).
-- No ART index on DuckDB: it serves point lookups only; the time-range filters are pruned by the
-- automatic min-max zonemaps, rows arriving in time order.
ALTER TABLE registry_stats ADD COLUMN min_value DOUBLE;
ALTER TABLE registry_stats ADD COLUMN max_value DOUBLE;
ALTER TABLE registry_stats ADD COLUMN samples INTEGER;
ALTER TABLE registry_activity ADD COLUMN samples INTEGER;
