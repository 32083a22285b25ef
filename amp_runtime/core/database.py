"""The database side of the store: its backends (DuckDB here, PostgreSQL in `postgres.py`), the
one thread that drives the connection, migrations, and SQL helpers shared by store functions.

Only the Store (`store.py`) drives these; store functions receive the connection.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Protocol

import duckdb
import trio

from .actor import Reply

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# DuckDB words a full or failing disk in several exception types (a COMMIT's is a TransactionException).
_DISK_TROUBLE = re.compile(r"No space left|Could not write|Could not (?:truncate|sync)|database has been invalidated",
                           re.IGNORECASE)
SPACE_PROBE_BYTES = 1 << 20  # a reopened store must have room for about this much before it counts as back


class StoreError(Exception):
    """The store cannot be opened (locked by another process, unreadable, ...) or reached: at
    start the process reports it in one line and exits 2; once serving, it reconnects."""


class WorkerIdClaimed(StoreError):
    """Another live process on the same store holds one of this process's worker ids."""


class StoreGone(StoreError):
    """The store stayed unreachable for longer than a non-zero `[store] reconnect_s`: the process
    exits with its own code (3), not a configuration problem's."""


class DbThread:
    """One OS thread that owns the connection; jobs come in through a queue."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=f"amp-{name}", daemon=True)
        self.conn: Any = None

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, reply, token = job
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting trio task
                outcome = (reply.fail, exc)
            else:
                outcome = (reply.set, result)
            try:
                token.run_sync_soon(*outcome)
            except trio.RunFinishedError:
                pass

    def submit(self, fn: Callable[[], Any]) -> Reply:
        """Hand `fn` to the DB thread; the returned reply settles when it has run."""
        reply = Reply()
        self._jobs.put((fn, reply, trio.lowlevel.current_trio_token()))
        return reply

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the DB thread. Shielded: once handed over, the caller sees it through."""
        reply = self.submit(fn)
        with trio.CancelScope(shield=True):
            return await reply.wait()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)


def _open_connection(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create data dir {path.parent}: {exc.strerror or exc}") from None
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StoreError(
                f"the store {path} is in use by another process "
                "(another amp-runtime on the same data dir?); stop it or use --data-dir"
            ) from None
        raise StoreError(f"cannot open the store {path}: {text}") from None
    except duckdb.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None


class StoreBackend(Protocol):
    """What the Store needs of a database: its connection, its migrations, how it closes."""

    name: str

    def describe(self) -> str: ...  # for logs: never a password

    def connect(self) -> Any: ...  # raises StoreError

    def migrate(self, conn: Any) -> list[int]: ...

    def close(self, conn: Any) -> None: ...

    def is_lost(self, conn: Any, exc: BaseException) -> bool: ...  # did `exc` break the connection?

    def claim_worker_ids(self, ids: list[str]) -> None: ...  # raises WorkerIdClaimed

    def check_claims(self) -> None: ...  # re-takes the claims after a reconnect; raises StoreError


class DuckDBBackend:
    """The embedded default: one DuckDB file in the data dir, locked by this process."""

    name = "duckdb"

    def __init__(self, path: Path):
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def connect(self) -> duckdb.DuckDBPyConnection:
        conn = _open_connection(self.path)
        try:
            _probe_space(self.path.parent)
        except StoreError:
            conn.close()
            raise
        return conn

    def migrate(self, conn: duckdb.DuckDBPyConnection) -> list[int]:
        return apply_migrations(conn)

    def close(self, conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("CHECKPOINT")
        conn.close()

    def is_lost(self, conn: Any, exc: BaseException) -> bool:
        """A full or failing disk: the store reopens the file once there is room again."""
        if isinstance(exc, (duckdb.FatalException, duckdb.IOException)):
            return True
        return isinstance(exc, duckdb.Error) and _DISK_TROUBLE.search(str(exc)) is not None

    def claim_worker_ids(self, ids: list[str]) -> None:
        pass  # the file lock already keeps a second process off this store

    def check_claims(self) -> None:
        pass


def _probe_space(directory: Path) -> None:
    """Raises StoreError unless `directory` takes a small file (a disk that filled up may have
    room again: opening the file alone does not say so)."""
    probe = directory / ".amp-space-probe"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * SPACE_PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StoreError(f"the store's disk at {directory} has no room: {exc.strerror or exc}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _migrations(package: str) -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(package).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def apply_migrations(conn: Any, package: str = "amp_runtime.migrations") -> list[int]:
    """Apply every migration of `package` newer than `schema_version`, each in its own transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    applied = []
    for version, name, sql in _migrations(package):
        if version <= current:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for a PostgreSQL advisory lock named `name` (same in every peer)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def lock_for_transaction(conn, name: str) -> None:
    """Serialise a check-then-write on `name` across peers until this transaction ends.

    PostgreSQL: `pg_advisory_xact_lock`, released by COMMIT or ROLLBACK. DuckDB has one process,
    whose group commit already runs one transaction at a time: nothing to do."""
    lock = getattr(conn, "lock_for_transaction", None)
    if lock is not None:
        lock(advisory_key(name))


def insert_columns(conn, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """One `INSERT ... SELECT unnest(...)` for many rows: ~100x faster than executemany."""
    insert_rows = getattr(conn, "insert_rows", None)  # PostgreSQL: COPY (unnest flattens arrays of arrays)
    if insert_rows is not None:
        insert_rows(table, columns, rows)
        return
    column_values = [list(values) for values in zip(*rows)]
    selects = ", ".join("unnest(?)" for _ in columns)
    conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selects}", column_values
    )
