"""The durable workers' SQL: plain functions of a connection (DuckDB or PostgreSQL), run by the store actor.

Write functions run inside the store's group-commit transaction (never BEGIN here) and
may be re-run alone if their batch fails, so each is self-contained. Every change a worker
makes lands in one write together with its oplog entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from ..core.clock import naive_utc, utcnow
from ..core.store import lock_for_transaction

_json = msgspec.json.encode


@dataclass(slots=True)
class WorkerRow:
    worker: str
    template_id: str
    name: str
    template_version: int
    args: list[str]
    env: dict[str, str]
    status: str
    retry_count: int
    state: bytes


@dataclass(slots=True)
class PendingInvocation:
    seq: int
    key: str | None
    function: str
    params: list[Any]  # as sent (JSON values)
    convention: str


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """What an invocation key was first used for: a later use must make the same call."""

    function: str
    convention: str
    params: bytes  # canonical JSON (object keys sorted)

    @classmethod
    def of(cls, function: str, params: list[Any], convention: str) -> RecordedCall:
        return cls(function, convention, msgspec.json.encode(params, order="sorted"))

    def mismatch(self, other: RecordedCall) -> str | None:
        """How `other` differs from this call, or None when it is the same call."""
        if other.function != self.function:
            return f"function {self.function!r}, not {other.function!r}"
        if other.convention != self.convention:
            return f"calling-convention {self.convention}, not {other.convention}"
        if other.params != self.params:
            return f"other parameters ({self.params.decode()[:200]})"
        return None


@dataclass(slots=True)
class PromiseRow:
    idx: int
    invocation_seq: int
    ordinal: int
    completed: bool
    data: list[int] | None


@dataclass(slots=True)
class Snapshot:
    """All a worker instance needs to come back after a restart."""

    row: WorkerRow
    last_idx: int
    pending: list[PendingInvocation] = field(default_factory=list)
    keys: dict[str, int | None] = field(default_factory=dict)  # key -> invocation seq (None = unused)
    key_calls: dict[str, RecordedCall] = field(default_factory=dict)  # used key -> the call it made
    outcomes: dict[int, tuple[bool, bytes]] = field(default_factory=dict)  # keyed seq -> (ok, result or error)
    promises: list[PromiseRow] = field(default_factory=list)


def _oplog(conn, worker: str, idx: int, kind: str, detail: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO durable_oplog (worker, idx, kind, detail, logged_at) VALUES (?, ?, ?, ?, ?)",
        [worker, idx, kind, _json(detail).decode(), naive_utc(utcnow())],
    )


# -- templates ---------------------------------------------------------------------------
def sync_template_version(conn, template_id: str, name: str, interface_hash: str) -> int:
    """The template's current version: the last one if its interface is unchanged, else +1."""
    lock_for_transaction(conn, f"durable_template:{template_id}")  # peers starting together
    row = conn.execute(
        "SELECT version, interface_hash FROM durable_template_versions WHERE template_id = ?"
        " ORDER BY version DESC LIMIT 1",
        [template_id],
    ).fetchone()
    if row is not None and row[1] == interface_hash:
        return row[0]
    version = 1 if row is None else row[0] + 1
    conn.execute(
        "INSERT INTO durable_template_versions VALUES (?, ?, ?, ?, ?)",
        [template_id, name, version, interface_hash, naive_utc(utcnow())],
    )
    return version


# -- workers -----------------------------------------------------------------------------
def create_worker(conn, row: WorkerRow, max_workers: int, lease: tuple[str, str, float] | None = None) -> str:
    """Insert a worker: "ok", or "exists" / "full" without writing anything. With `lease`
    (owner, owner_url, lease_s: peers on PostgreSQL) the creating peer owns it."""
    lock_for_transaction(conn, "durable_workers")  # the count and the name checks hold across peers
    if conn.execute("SELECT 1 FROM durable_workers WHERE worker = ?", [row.worker]).fetchone():
        return "exists"
    (count,) = conn.execute("SELECT count(*) FROM durable_workers").fetchone()
    if count >= max_workers:
        return "full"
    conn.execute(
        "INSERT INTO durable_workers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [row.worker, row.template_id, row.name, row.template_version, _json(row.args).decode(),
         _json(row.env).decode(), row.status, row.retry_count, row.state, naive_utc(utcnow())],
    )
    _oplog(conn, row.worker, 0, "create", {"args": row.args, "env": row.env})
    if lease is not None:
        create_lease(conn, row.worker, *lease)
    return "ok"


def _worker_rows(rows) -> list[WorkerRow]:
    return [
        WorkerRow(w, t, n, v, msgspec.json.decode(a), msgspec.json.decode(e), s, r, bytes(st))
        for w, t, n, v, a, e, s, r, st in rows
    ]


_WORKER_COLUMNS = "worker, template_id, name, template_version, args, env, status, retry_count, state"


def list_workers(conn) -> list[WorkerRow]:
    return _worker_rows(conn.execute(f"SELECT {_WORKER_COLUMNS} FROM durable_workers ORDER BY created_at").fetchall())


def load_snapshot(conn, worker: str) -> Snapshot | None:
    rows = _worker_rows(conn.execute(f"SELECT {_WORKER_COLUMNS} FROM durable_workers WHERE worker = ?", [worker]).fetchall())
    if not rows:
        return None
    (last_idx,) = conn.execute("SELECT coalesce(max(idx), 0) FROM durable_oplog WHERE worker = ?", [worker]).fetchone()
    snap = Snapshot(rows[0], last_idx)
    for seq, key, function, params, convention, outcome, result, error in conn.execute(
        "SELECT seq, invocation_key, function, params, convention, outcome, result, error"
        " FROM durable_invocations WHERE worker = ? AND (outcome = 'pending' OR invocation_key IS NOT NULL)"
        " ORDER BY seq",
        [worker],
    ).fetchall():
        decoded = msgspec.json.decode(params)
        if outcome == "pending":
            snap.pending.append(PendingInvocation(seq, key, function, decoded, convention))
        else:
            snap.outcomes[seq] = (outcome == "ok", (result if outcome == "ok" else error).encode())
        if key is not None:
            snap.keys[key] = seq
            snap.key_calls[key] = RecordedCall.of(function, decoded, convention)
    for (key,) in conn.execute("SELECT invocation_key FROM durable_keys WHERE worker = ?", [worker]).fetchall():
        snap.keys.setdefault(key, None)
    snap.promises = [
        PromiseRow(idx, seq, ordinal, completed, None if data is None else msgspec.json.decode(data))
        for idx, seq, ordinal, completed, data in conn.execute(
            "SELECT idx, invocation_seq, ordinal, completed, data FROM durable_promises WHERE worker = ?", [worker]
        ).fetchall()
    ]
    return snap


def delete_worker(conn, worker: str) -> None:
    for table in ("durable_workers", "durable_oplog", "durable_invocations", "durable_keys", "durable_promises",
                  "durable_leases"):
        conn.execute(f"DELETE FROM {table} WHERE worker = ?", [worker])


def set_status(conn, worker: str, idx: int, kind: str, status: str, retry_count: int, detail: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE durable_workers SET status = ?, retry_count = ? WHERE worker = ?", [status, retry_count, worker]
    )
    _oplog(conn, worker, idx, kind, detail)


def oplog(conn, worker: str) -> list[tuple[int, str, str, datetime]]:
    return conn.execute(
        "SELECT idx, kind, detail, logged_at FROM durable_oplog WHERE worker = ? ORDER BY idx", [worker]
    ).fetchall()


# -- keys and invocations ----------------------------------------------------------------
def add_key(conn, worker: str, key: str) -> None:
    conn.execute(
        "INSERT INTO durable_keys VALUES (?, ?, ?) ON CONFLICT (worker, invocation_key) DO NOTHING",
        [worker, key, naive_utc(utcnow())],
    )


def accept_invocation(conn, worker: str, inv: PendingInvocation) -> None:
    conn.execute(
        "INSERT INTO durable_invocations (worker, seq, invocation_key, function, params, convention, outcome, accepted_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
        [worker, inv.seq, inv.key, inv.function, _json(inv.params).decode(), inv.convention, naive_utc(utcnow())],
    )
    _oplog(conn, worker, inv.seq, "invoke", {"function": inv.function, "key": inv.key})


def finish_invocation(conn, worker: str, idx: int, seq: int, result: bytes, state: bytes) -> None:
    """Record the result and the new state together: the invocation is done exactly once."""
    conn.execute(
        "UPDATE durable_invocations SET outcome = 'ok', result = ?, finished_at = ? WHERE worker = ? AND seq = ?",
        [result.decode(), naive_utc(utcnow()), worker, seq],
    )
    conn.execute("UPDATE durable_workers SET state = ? WHERE worker = ?", [state, worker])
    _oplog(conn, worker, idx, "done", {"invocation": seq})


def fail_invocations(conn, worker: str, idx: int, errors: dict[int, str], retry_count: int, status: str) -> None:
    """Record failed invocations (the one that exhausted its retries and those queued behind it)."""
    now = naive_utc(utcnow())
    for seq, error in errors.items():
        conn.execute(
            "UPDATE durable_invocations SET outcome = 'error', error = ?, finished_at = ? WHERE worker = ? AND seq = ?",
            [error, now, worker, seq],
        )
    conn.execute(
        "UPDATE durable_workers SET status = ?, retry_count = ? WHERE worker = ?", [status, retry_count, worker]
    )
    _oplog(conn, worker, idx, "failed", {"invocations": list(errors)})


# -- promises ----------------------------------------------------------------------------
def create_promise(conn, worker: str, idx: int, invocation_seq: int, ordinal: int) -> None:
    conn.execute(
        "INSERT INTO durable_promises (worker, idx, invocation_seq, ordinal, completed) VALUES (?, ?, ?, ?, false)",
        [worker, idx, invocation_seq, ordinal],
    )
    _oplog(conn, worker, idx, "promise", {"invocation": invocation_seq})


def complete_promise(conn, worker: str, idx: int, promise_idx: int, data: list[int]) -> None:
    conn.execute(
        "UPDATE durable_promises SET completed = true, data = ?, completed_at = ? WHERE worker = ? AND idx = ?",
        [_json(data).decode(), naive_utc(utcnow()), worker, promise_idx],
    )
    _oplog(conn, worker, idx, "complete", {"promise": promise_idx})


# -- leases (peers on a shared PostgreSQL store) ------------------------------------------
# The database's clock decides expiry, so peers on hosts whose clocks differ agree on it.
class LeaseLost(Exception):
    """A fenced write found the worker's lease held by another peer: nothing was written."""


def fenced(conn, owner: str, worker: str, fn, *args: Any) -> Any:
    """`fn(conn, worker, *args)` if `owner` still holds the lease (expired or not: nobody took it).
    The row lock holds a peer's claim of it until this transaction ends, so a new owner's
    snapshot sees every write the old owner made."""
    row = conn.execute("SELECT owner FROM durable_leases WHERE worker = ? FOR SHARE", [worker]).fetchone()
    if row is None or row[0] != owner:
        raise LeaseLost(worker)
    return fn(conn, worker, *args)


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str
    owner_url: str
    live: bool  # not expired


def lease_of(conn, worker: str) -> tuple[bool, Lease | None]:
    """(does the worker exist, its lease or None)."""
    if not conn.execute("SELECT 1 FROM durable_workers WHERE worker = ?", [worker]).fetchone():
        return False, None
    row = conn.execute(
        "SELECT owner, owner_url, expires_at > now() FROM durable_leases WHERE worker = ?", [worker]
    ).fetchone()
    return True, None if row is None else Lease(row[0], row[1], bool(row[2]))


def claim_leases(conn, owner: str, owner_url: str, lease_s: float, template_ids: list[str],
                 worker: str | None = None) -> list[str]:
    """Take the lease of `worker` (or of every worker of `template_ids`) where it is absent,
    expired or already this owner's: a compare-and-set, so of peers racing exactly one wins.
    Returns the workers taken."""
    if not template_ids:
        return []
    one = "" if worker is None else " AND w.worker = ?"
    rows = conn.execute(
        "INSERT INTO durable_leases (worker, owner, owner_url, expires_at)"
        " SELECT w.worker, ?, ?, now() + make_interval(secs => ?) FROM durable_workers w"
        " LEFT JOIN durable_leases l ON l.worker = w.worker"
        f" WHERE (l.worker IS NULL OR l.expires_at <= now() OR l.owner = ?) AND w.template_id = ANY(?){one}"
        " ORDER BY w.worker"  # every peer locks rows in one order: racing claims queue, not deadlock
        " ON CONFLICT (worker) DO UPDATE SET owner = excluded.owner, owner_url = excluded.owner_url,"
        " expires_at = excluded.expires_at"
        " WHERE durable_leases.expires_at <= now() OR durable_leases.owner = excluded.owner"
        " RETURNING worker",
        [owner, owner_url, float(lease_s), owner, list(template_ids), *([] if worker is None else [worker])],
    ).fetchall()
    return [w for (w,) in rows]


def renew_leases(conn, owner: str, lease_s: float) -> list[str]:
    """Push this owner's unexpired leases forward; returns the workers it still holds."""
    rows = conn.execute(
        "UPDATE durable_leases SET expires_at = now() + make_interval(secs => ?)"
        " WHERE owner = ? AND expires_at > now() RETURNING worker",
        [float(lease_s), owner],
    ).fetchall()
    return [w for (w,) in rows]


def release_leases(conn, owner: str, workers: list[str]) -> None:
    """Give leases up (a draining or fencing peer): another peer may take them at once."""
    conn.execute("DELETE FROM durable_leases WHERE owner = ? AND worker = ANY(?)", [owner, workers])


def create_lease(conn, worker: str, owner: str, owner_url: str, lease_s: float) -> None:
    """The creating peer owns a new worker (inside `create_worker`'s write, under its lock)."""
    conn.execute("DELETE FROM durable_leases WHERE worker = ?", [worker])  # a leftover of a deleted namesake
    conn.execute(
        "INSERT INTO durable_leases (worker, owner, owner_url, expires_at)"
        " VALUES (?, ?, ?, now() + make_interval(secs => ?))",
        [worker, owner, owner_url, float(lease_s)],
    )
