"""The jobs SQL: plain functions of a connection, run by the store actor (`store.read/write`).

Write functions run inside the store's group-commit transaction (never BEGIN here) and
may be re-run alone if a batch they shared fails, so each is self-contained. The SQL runs on
DuckDB and PostgreSQL: list parameters and possibly-NULL ones are cast so both know their type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from ..core.clock import naive_utc, rfc3339
from .models import Job, JobDescriptor, TableProgress
from .states import TERMINAL

_COLUMNS = "id, dataset, start_block, end_block, node_id, status, batch_blocks, error, created_at, updated_at"


@dataclass(slots=True)
class JobRecord:
    """A jobs row as the scheduler and the API see it."""

    id: int
    dataset: str
    start_block: int
    end_block: int | None
    node_id: str
    status: str
    batch_blocks: int
    error: str | None
    created_at: datetime
    updated_at: datetime

    def to_api(self) -> Job:
        return Job(
            id=self.id,
            created_at=rfc3339(self.created_at),
            updated_at=rfc3339(self.updated_at),
            node_id=self.node_id,
            status=self.status,
            descriptor=JobDescriptor(
                dataset=self.dataset, start_block=self.start_block, end_block=self.end_block
            ),
            error=self.error,
        )


@dataclass(slots=True)
class ProgressRow:
    job_id: int
    table: str
    files_count: int
    total_size_bytes: int
    start_block: int
    current_block: int

    def to_api(self) -> TableProgress:
        return TableProgress(
            files_count=self.files_count,
            total_size_bytes=self.total_size_bytes,
            start_block=self.start_block,
            current_block=self.current_block,
        )


def _records(rows: Iterable[tuple]) -> list[JobRecord]:
    return [JobRecord(*row) for row in rows]


# -- writes ------------------------------------------------------------------------------
def insert_job(conn, dataset: str, start: int, end: int | None, node_id: str, batch_blocks: int, now: datetime) -> JobRecord:
    """Take the next id from the persisted sequence and insert a Scheduled job."""
    (job_id,) = conn.execute("UPDATE job_ids SET last_id = last_id + 1 RETURNING last_id").fetchone()
    now = naive_utc(now)
    record = JobRecord(job_id, dataset, start, end, node_id, "Scheduled", batch_blocks, None, now, now)
    conn.execute(
        f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [record.id, dataset, start, end, node_id, record.status, batch_blocks, None, now, now],
    )
    return record


def insert_job_unless_active(conn, dataset: str, start: int, end: int | None, node_id: str, batch_blocks: int,
                             now: datetime) -> tuple[JobRecord, bool]:
    """PostgreSQL peers: `insert_job` unless the dataset has an active job. Returns (the new
    job, True) or (the active one, False). A transaction-level advisory lock per dataset makes
    the check and the insert one step for peers creating at the same moment."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", [f"amp_jobs:{dataset}"])
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE dataset = ? AND status NOT IN (SELECT unnest(?::VARCHAR[]))"
        " ORDER BY id LIMIT 1",
        [dataset, sorted(TERMINAL)],
    ).fetchall()
    if rows:
        return _records(rows)[0], False
    return insert_job(conn, dataset, start, end, node_id, batch_blocks, now), True


def insert_jobs_bulk(conn, rows: list[tuple[str, int, int | None, str, str, int]], now: datetime) -> list[int]:
    """Many jobs at once `(dataset, start, end, node_id, status, batch_blocks)` (seeding, benches)."""
    (last,) = conn.execute(
        "UPDATE job_ids SET last_id = last_id + ? RETURNING last_id", [len(rows)]
    ).fetchone()
    ids = list(range(last - len(rows) + 1, last + 1))
    now = naive_utc(now)
    columns = list(zip(*rows)) if rows else [[]] * 6
    conn.execute(
        "INSERT INTO jobs (id, dataset, start_block, end_block, node_id, status, batch_blocks, created_at, updated_at)"
        " SELECT unnest(?::BIGINT[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]),"
        " unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[]), ?, ?",
        [ids, *[list(c) for c in columns], now, now],
    )
    return ids


def set_status(conn, job_id: int, old: str, new: str, now: datetime, error: str | None,
               node_id: str | None = None) -> bool:
    """Compare-and-set: only while the job is still `old` (and, given `node_id`, still on that
    worker: a peer that lost the job cannot end it). False: someone changed it first (a peer,
    on a shared store); nothing is written then."""
    now = naive_utc(now)
    changed = conn.execute(
        "UPDATE jobs SET status = ?, updated_at = ?, error = coalesce(?, error) WHERE id = ? AND status = ?"
        " AND (?::VARCHAR IS NULL OR node_id = ?) RETURNING id",
        [new, now, error, job_id, old, node_id, node_id],
    ).fetchall()
    if not changed:
        return False
    conn.execute("INSERT INTO job_transitions VALUES (?, ?, ?, ?)", [job_id, old, new, now])
    return True


def set_node(conn, job_id: int, old_node: str, new_node: str, now: datetime) -> bool:
    """Compare-and-set the job's worker: only an active job still on `old_node` moves, so of
    peers racing to take over one job exactly one wins."""
    changed = conn.execute(
        "UPDATE jobs SET node_id = ?, updated_at = ? WHERE id = ? AND node_id = ?"
        " AND status NOT IN (SELECT unnest(?::VARCHAR[])) RETURNING id",
        [new_node, naive_utc(now), job_id, old_node, sorted(TERMINAL)],
    ).fetchall()
    return bool(changed)


def notify_jobs(conn, job_ids: list[int]) -> None:
    """PostgreSQL only: wake the peers listening on `amp_jobs` (delivered at commit)."""
    for job_id in job_ids:
        conn.execute("SELECT pg_notify('amp_jobs', ?)", [str(job_id)])


def add_job_workers(conn, worker_ids: list[str], now: datetime) -> None:
    """Say that these workers run jobs (a peer's `[[workers]]`, at its start)."""
    conn.execute(
        "INSERT INTO job_workers SELECT unnest(?::VARCHAR[]), ? ON CONFLICT (worker_id) DO NOTHING",
        [worker_ids, naive_utc(now)],
    )


def live_worker_ids(conn, max_age_s: float) -> list[str]:
    """The job workers of every process sharing the store that are registered with a heartbeat
    within `max_age_s` (the registry's rows are the truth on a shared store). Aged by the
    database's clock, which stamped the heartbeats: the peers' own clocks may disagree."""
    rows = conn.execute(
        "SELECT r.id FROM registry_workers r JOIN job_workers j ON j.worker_id = r.id"
        " WHERE r.registered AND r.heartbeat_at >= (now() AT TIME ZONE 'UTC') - ? * INTERVAL '1 second'"
        " ORDER BY r.id",
        [max_age_s],
    ).fetchall()
    return [row[0] for row in rows]


def upsert_progress(conn, rows: list[ProgressRow], now: datetime) -> None:
    """Latest absolute progress per (job, table): one statement for the whole batch."""
    if not rows:
        return
    conn.execute(
        "INSERT INTO job_progress SELECT unnest(?::BIGINT[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[]),"
        " unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]), ?"
        " ON CONFLICT (job_id, table_name) DO UPDATE SET files_count = excluded.files_count,"
        " total_size_bytes = excluded.total_size_bytes, start_block = excluded.start_block,"
        " current_block = excluded.current_block, updated_at = excluded.updated_at",
        [
            [r.job_id for r in rows],
            [r.table for r in rows],
            [r.files_count for r in rows],
            [r.total_size_bytes for r in rows],
            [r.start_block for r in rows],
            [r.current_block for r in rows],
            naive_utc(now),
        ],
    )


def _delete_rest(conn, ids: list[int]) -> None:
    if ids:
        for table, column in (("job_progress", "job_id"), ("job_transitions", "job_id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT unnest(?::BIGINT[]))", [ids])


def delete_job(conn, job_id: int) -> str | None:
    """Delete a terminal job. Returns None when deleted or absent, else the blocking status.

    The status test is in the DELETE itself: a peer moving the job at the same moment either
    commits first (and the job stays) or waits for this delete."""
    deleted = conn.execute(
        "DELETE FROM jobs WHERE id = ? AND status IN (SELECT unnest(?::VARCHAR[])) RETURNING id",
        [job_id, sorted(TERMINAL)],
    ).fetchall()
    if deleted:
        _delete_rest(conn, [job_id])
        return None
    row = conn.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
    return None if row is None else row[0]


def delete_jobs_with_status(conn, statuses: frozenset[str]) -> int:
    """Delete every job whose status is in `statuses` (all terminal); one transaction."""
    assert statuses <= TERMINAL, "only terminal jobs may be deleted"
    ids = [row[0] for row in conn.execute(
        "DELETE FROM jobs WHERE status IN (SELECT unnest(?::VARCHAR[])) RETURNING id", [sorted(statuses)]
    ).fetchall()]
    _delete_rest(conn, ids)
    return len(ids)


# -- reads -------------------------------------------------------------------------------
def get_job(conn, job_id: int) -> JobRecord | None:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", [job_id]).fetchall()
    return _records(rows)[0] if rows else None


def list_jobs(conn, statuses: frozenset[str], before_id: int | None, limit: int) -> list[JobRecord]:
    """Newest first; `before_id` is the cursor (exclusive)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE status IN (SELECT unnest(?::VARCHAR[]))"
        " AND (?::BIGINT IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
        [sorted(statuses), before_id, before_id, limit],
    ).fetchall()
    return _records(rows)


def active_jobs(conn) -> list[JobRecord]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE status NOT IN (SELECT unnest(?::VARCHAR[])) ORDER BY id",
        [sorted(TERMINAL)],
    ).fetchall()
    return _records(rows)


def progress_of(conn, job_id: int) -> list[ProgressRow]:
    rows = conn.execute(
        "SELECT job_id, table_name, files_count, total_size_bytes, start_block, current_block"
        " FROM job_progress WHERE job_id = ? ORDER BY table_name",
        [job_id],
    ).fetchall()
    return [ProgressRow(*row) for row in rows]


def job_with_progress(conn, job_id: int) -> tuple[JobRecord | None, list[ProgressRow]]:
    return get_job(conn, job_id), progress_of(conn, job_id)


def transitions_of(conn, job_id: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        # rowid: DuckDB's implicit one; the PostgreSQL schema declares it (an identity column)
        "SELECT from_status, to_status FROM job_transitions WHERE job_id = ? ORDER BY changed_at, rowid",
        [job_id],
    ).fetchall()
    return [tuple(row) for row in rows]


def job_covering(conn, dataset: str, first: int, last: int) -> JobRecord | None:
    """The newest job of `dataset` whose range holds `[first, last]`, or None."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE dataset = ? AND start_block <= ?"
        " AND (end_block IS NULL OR end_block >= ?) ORDER BY id DESC LIMIT 1",
        [dataset, first, last],
    ).fetchall()
    return _records(rows)[0] if rows else None
