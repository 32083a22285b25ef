-- PostgreSQL twin of ../0011_registry_stats_rollup.sql, plus the indexes its queries use.
-- Machine stats and activity older than an hour are rolled up into one row per series and minute
-- (registry/store.py `roll_up_stats`), so a worker's rows per day are bounded. A rolled-up row
-- carries its samples' count and extremes; a full-resolution row leaves them NULL (value alone).
ALTER TABLE registry_stats ADD COLUMN min_value DOUBLE PRECISION;
ALTER TABLE registry_stats ADD COLUMN max_value DOUBLE PRECISION;
ALTER TABLE registry_stats ADD COLUMN samples INTEGER;
ALTER TABLE registry_activity ADD COLUMN samples INTEGER;
-- get_stats and get_activity_report by time range, the retention's deletes and the rollup:
CREATE INDEX registry_stats_ts ON registry_stats (ts);
CREATE INDEX registry_activity_ts ON registry_activity (ts);
-- get_stats and get_metric_keys for given workers:
CREATE INDEX registry_stats_worker_metric_ts ON registry_stats (worker, metric, ts);
