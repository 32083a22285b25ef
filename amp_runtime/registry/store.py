"""The registry's SQL: functions of the store's connection (DuckDB or PostgreSQL), run by the store actor.

Portable SQL: list parameters are cast (`?::VARCHAR[]`) so PostgreSQL knows their type too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ..core.store import insert_columns, lock_for_transaction

from .models import WorkerInfo, WorkerRecord

WORKER_COLUMNS = (
    "id, version, created_at, registered_at, heartbeat_at, last_report_at, registered, timeout_s,"
    " info, ip, tags, system_tags, queues, task, queue"
)
STATS_TABLE = "registry_stats"
STATS_COLUMNS = ("worker", "metric", "variant", "ts", "value")
ACTIVITY_TABLE = "registry_activity"
ACTIVITY_COLUMNS = ("worker", "ts", "has_task")


def record_row(rec: WorkerRecord) -> tuple:
    return (
        rec.id, rec.version, rec.created_at, rec.registered_at, rec.heartbeat_at, rec.last_report_at,
        rec.registered, rec.timeout_s, msgspec.json.encode(rec.info).decode(), rec.ip,
        rec.tags, rec.system_tags, rec.queues, rec.task, rec.queue,
    )


def save_workers(conn, rows: list[tuple]) -> None:
    """Replace the workers' rows with the newest version of each, set-based; a row older than the
    stored one is dropped (two reports of one worker may reach the writer out of order)."""
    newest: dict[str, tuple] = {}
    for row in rows:
        if row[0] not in newest or newest[row[0]][1] < row[1]:
            newest[row[0]] = row
    if not newest:
        return
    # Peers replace rows of the same workers: the version check and the replacement must not interleave.
    lock_for_transaction(conn, "registry_workers")
    stored = dict(conn.execute(
        "SELECT id, version FROM registry_workers WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(newest)]
    ).fetchall())
    newest = {k: row for k, row in newest.items() if stored.get(k, -1) < row[1]}
    if not newest:
        return
    conn.execute("DELETE FROM registry_workers WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(newest)])
    insert_columns(conn, "registry_workers", tuple(c.strip() for c in WORKER_COLUMNS.split(",")), list(newest.values()))


def write_batch(
    conn, workers: list[tuple], stats: list[tuple], activity: list[tuple], changes: list[tuple[str, dict]] = (),
) -> None:
    """One writer batch: worker records (DuckDB) or changes (PostgreSQL), stats rows and activity rows."""
    save_workers(conn, workers)
    apply_changes(conn, changes)
    if stats:
        insert_columns(conn, STATS_TABLE, STATS_COLUMNS, stats)
    if activity:
        insert_columns(conn, ACTIVITY_TABLE, ACTIVITY_COLUMNS, activity)


def load_workers(conn) -> list[WorkerRecord]:
    rows = conn.execute(f"SELECT {WORKER_COLUMNS} FROM registry_workers ORDER BY id").fetchall()
    records = []
    for r in rows:
        records.append(WorkerRecord(
            id=r[0], version=r[1], created_at=r[2], registered_at=r[3], heartbeat_at=r[4],
            last_report_at=r[5], registered=r[6], timeout_s=r[7],
            info=msgspec.json.decode(r[8], type=WorkerInfo), ip=r[9], tags=list(r[10]),
            system_tags=list(r[11]), queues=list(r[12]), task=r[13], queue=r[14],
        ))
    return records


# The database's clock as naive UTC (the TIMESTAMP columns' form). Peers' clocks may disagree;
# liveness on a shared store is judged by this one clock only.
DB_NOW = "(now() AT TIME ZONE 'UTC')"


def load_workers_and_clock(conn) -> tuple[list[WorkerRecord], datetime]:
    """PostgreSQL: every worker's record and the database's clock, read just before them (the
    "now" their ages are measured against, whatever this host's clock says)."""
    (db_now,) = conn.execute(f"SELECT {DB_NOW}").fetchone()
    return load_workers(conn), db_now


def get_secret(conn, name: str) -> str | None:
    row = conn.execute("SELECT value FROM registry_secrets WHERE name = ?", [name]).fetchone()
    return row[0] if row else None


def set_secret_once(conn, name: str, value: str) -> str:
    """Store `value` unless a secret of that name exists; returns the one kept (a peer's may win)."""
    conn.execute("INSERT INTO registry_secrets VALUES (?, ?) ON CONFLICT (name) DO NOTHING", [name, value])
    return get_secret(conn, name)


def delete_stats_before(conn, cutoff_ts: float) -> None:
    conn.execute("DELETE FROM registry_stats WHERE ts < ?", [cutoff_ts])
    conn.execute("DELETE FROM registry_activity WHERE ts < ?", [cutoff_ts])


def roll_up_stats(conn, cutoff_ts: float, rollup_s: int) -> None:
    """Full-resolution stats and activity before `cutoff_ts` (a multiple of `rollup_s`) become one
    row per series (worker, metric, variant) and `rollup_s`: the mean in `value`, the extremes, the
    count in `samples`. Buckets of whole multiples of `rollup_s` aggregate exactly as before.
    A late report of an older time is rolled up by the next round, in a row of its own."""
    lock_for_transaction(conn, "registry_stats_rollup")  # peers: one rollup at a time
    cutoff = {"cutoff": cutoff_ts}
    # The rows are claimed first (samples 0, seen by this transaction only): a row another peer
    # commits meanwhile is neither aggregated nor deleted by the statements that follow.
    conn.execute("UPDATE registry_stats SET samples = 0 WHERE samples IS NULL AND ts < $cutoff", cutoff)
    conn.execute(
        "INSERT INTO registry_stats (worker, metric, variant, ts, value, min_value, max_value, samples)"
        " SELECT worker, metric, variant, floor(ts / $r) * $r, avg(value), min(value), max(value), count(*)"
        " FROM registry_stats WHERE samples = 0 GROUP BY 1, 2, 3, 4", {"r": rollup_s})
    conn.execute("DELETE FROM registry_stats WHERE samples = 0")
    conn.execute("UPDATE registry_activity SET samples = 0 WHERE samples IS NULL AND ts < $cutoff", cutoff)
    conn.execute(
        "INSERT INTO registry_activity (worker, ts, has_task, samples)"
        " SELECT worker, floor(ts / $r) * $r, bool_or(has_task), count(*)"
        " FROM registry_activity WHERE samples = 0 GROUP BY 1, 2", {"r": rollup_s})
    conn.execute("DELETE FROM registry_activity WHERE samples = 0")


def metric_keys(conn, worker_ids: list[str] | None) -> list[str]:
    sql = "SELECT DISTINCT metric FROM registry_stats"
    params: list[Any] = []
    if worker_ids:
        sql += " WHERE worker IN (SELECT unnest(?::VARCHAR[]))"
        params.append(worker_ids)
    return [r[0] for r in conn.execute(sql + " ORDER BY metric", params).fetchall()]


def stats_buckets(
    conn, *, metrics: list[str], from_date: float, to_date: float, interval: int,
    split_by_variant: bool, worker_ids: list[str] | None,
) -> list[tuple]:
    """One query: (worker, metric, variant, bucket_start, avg, min, max), ordered for grouping."""
    variant = "variant" if split_by_variant else "''"
    sql = (
        f"SELECT worker, metric, {variant} AS v, floor(ts / $interval) * $interval AS bucket,"
        # A rolled-up row stands for `samples` readings (`roll_up_stats`); a full-resolution one for one.
        " sum(value * coalesce(samples, 1)) / sum(coalesce(samples, 1)),"
        " min(coalesce(min_value, value)), max(coalesce(max_value, value))"
        " FROM registry_stats"
        " WHERE ts >= $from AND ts <= $to AND metric IN (SELECT unnest($metrics::VARCHAR[]))"
    )
    params: dict[str, Any] = {"interval": interval, "from": from_date, "to": to_date, "metrics": metrics}
    if worker_ids:
        sql += " AND worker IN (SELECT unnest($workers::VARCHAR[]))"
        params["workers"] = worker_ids
    # variants "2" before "10"; PostgreSQL sorts by an alias only bare, hence length({variant}) not length(v)
    sql += f" GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, length({variant}), 3, 4"
    return conn.execute(sql, params).fetchall()


def activity_buckets(conn, *, from_date: float, to_date: float, interval: int) -> list[tuple]:
    """One query: (bucket_start, workers reporting, workers reporting a task)."""
    return conn.execute(
        "SELECT floor(ts / $interval) * $interval AS bucket, count(DISTINCT worker),"
        " count(DISTINCT worker) FILTER (WHERE has_task)"
        " FROM registry_activity WHERE ts >= $from AND ts <= $to"
        " GROUP BY bucket ORDER BY bucket",
        {"interval": interval, "from": from_date, "to": to_date},
    ).fetchall()


# -- PostgreSQL, shared by peers: each change is merged into the row by the database -------------
# A peer's memory never holds the latest record (another peer may have written it since), so a
# change says what it sets and the statement keeps the rest of the row as stored.

# A change's time: the database's clock (`$at` NULL, what peers send), or a given time (tests).
_CHANGE_AT = f"coalesce($at::TIMESTAMP, {DB_NOW})"
_DEFAULT_INFO = msgspec.json.encode(WorkerInfo()).decode()


def _upsert(last_report: str, task_and_queue: str) -> str:
    """Insert a new worker's row, or update the stored one: fields a change leaves out keep their value."""
    return (
        f"INSERT INTO registry_workers AS w ({WORKER_COLUMNS}) VALUES ($worker, 1, {_CHANGE_AT}, {_CHANGE_AT},"
        f" {_CHANGE_AT}, {last_report},"
        " true, $timeout_s, coalesce($info::VARCHAR, $default_info::VARCHAR), $ip::VARCHAR,"
        " coalesce($tags::VARCHAR[], ARRAY[]::VARCHAR[]), coalesce($system_tags::VARCHAR[], ARRAY[]::VARCHAR[]),"
        f" coalesce($queues::VARCHAR[], ARRAY[]::VARCHAR[]), {task_and_queue})"
        " ON CONFLICT (id) DO UPDATE SET version = w.version + 1, registered = true,"
        " heartbeat_at = greatest(w.heartbeat_at, excluded.heartbeat_at), ip = coalesce(excluded.ip, w.ip),"
        " tags = coalesce($tags::VARCHAR[], w.tags), system_tags = coalesce($system_tags::VARCHAR[], w.system_tags),"
        " queues = coalesce($queues::VARCHAR[], w.queues), "
    )


# Live as `actor.is_live` says: registered and heard from within its timeout.
_LIVE = "(w.registered AND w.heartbeat_at + w.timeout_s * INTERVAL '1 second' >= excluded.heartbeat_at)"
REGISTER_SQL = _upsert("NULL", "NULL, NULL") + (
    "registered_at = excluded.registered_at, timeout_s = excluded.timeout_s, info = coalesce($info::VARCHAR, w.info)"
)
# A report to an unknown or expired worker (re-)registers it with the default timeout.
REPORT_SQL = _upsert(_CHANGE_AT, "$task::VARCHAR, $queue::VARCHAR") + (
    f"registered_at = CASE WHEN {_LIVE} THEN w.registered_at ELSE excluded.registered_at END,"
    f" timeout_s = CASE WHEN {_LIVE} THEN w.timeout_s ELSE excluded.timeout_s END,"
    " last_report_at = excluded.last_report_at, task = excluded.task, queue = excluded.queue"
)
UNREGISTER_SQL = (
    "UPDATE registry_workers SET registered = false, task = NULL, queue = NULL, version = version + 1"
    " WHERE id = $worker AND registered"
)
CHANGE_SQL = {"register": REGISTER_SQL, "report": REPORT_SQL, "unregister": UNREGISTER_SQL}


def change_params(kind: str, msg, at: datetime | None = None) -> tuple[str, dict]:
    """A Register / Report / Unregister message (actor.py) as a statement's parameters. Its time
    is `at`, by default the database's clock at the write (`msg.now` is one peer's clock: skewed
    peers would age each other's workers wrongly)."""
    if kind == "unregister":
        return kind, {"worker": msg.worker}
    params = {
        "worker": msg.worker, "at": at, "ip": msg.ip, "tags": msg.tags, "system_tags": msg.system_tags,
        "queues": msg.queues, "default_info": _DEFAULT_INFO,
    }
    if kind == "register":
        params.update(timeout_s=msg.timeout_s, info=None if msg.info is None else msgspec.json.encode(msg.info).decode())
    else:
        params.update(timeout_s=msg.default_timeout_s, info=None, task=msg.task, queue=msg.queue)
    return kind, params


def apply_changes(conn, changes: list[tuple[str, dict]]) -> None:
    """Each change as one statement, in order per worker; workers in id order, so two peers'
    batches lock rows in the same order (no deadlock). Runs of one kind go pipelined."""
    ordered = sorted(changes, key=lambda change: change[1]["worker"])  # stable: a worker's order is kept
    start = 0
    while start < len(ordered):
        end = start
        while end < len(ordered) and ordered[end][0] == ordered[start][0]:
            end += 1
        _execute_many(conn, CHANGE_SQL[ordered[start][0]], [params for _, params in ordered[start:end]])
        start = end


def _execute_many(conn, statement: str, params: list[dict]) -> None:
    from ..core.postgres import translate  # PostgreSQL only: psycopg is loaded with it

    query, _ = translate(statement)
    conn.raw.cursor().executemany(query, params)


def expire_workers(conn, now: datetime | None = None) -> list[str]:
    """Unregister every registered worker not heard from within its timeout, once: a peer's rows
    locked by a report in flight are skipped (the report wins; the next round looks again), and
    of two peers expiring at once only the first finds the row still registered. `now`: by
    default the database's clock, the one the heartbeats were written with."""
    rows = conn.execute(
        "WITH due AS (SELECT id FROM registry_workers"
        f" WHERE registered AND heartbeat_at + timeout_s * INTERVAL '1 second' < coalesce($now::TIMESTAMP, {DB_NOW})"
        " ORDER BY id FOR UPDATE SKIP LOCKED)"
        " UPDATE registry_workers w SET registered = false, version = w.version + 1 FROM due"
        " WHERE w.id = due.id RETURNING w.id",
        {"now": now},
    ).fetchall()
    return sorted(row[0] for row in rows)
