"""The coordinator's store: the one DuckDB connection, on the one thread that touches it.

Other actors never see the connection. They send the coordinator work as plain functions of
the connection:

- `await store.read(fn, *args)`   runs `fn(conn, *args)` and returns its result;
- `await store.write(fn, *args)`  runs it inside a group-commit transaction and returns once
  that transaction is durable;
- `await store.append(table, columns, row)`  adds one row to a column batch; rows of many
  callers become one `INSERT ... SELECT unnest(...)` per table in one transaction.

Group commit: while one transaction is on the thread, new writes pile up in the mailbox and
leave together as the next one (bounded by `group_commit_rows`); an idle store lingers at most
`group_commit_ms` for company. A write that fails alone fails only its own caller.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import duckdb
import trio

from .actor import Actor, ActorUnavailable, Reply

log = logging.getLogger("amp_runtime.store")

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class StoreError(Exception):
    """The store cannot be opened (locked by another process, unreadable, ...)."""


@dataclass(slots=True)
class _Read:
    fn: Callable[..., Any]
    args: tuple


@dataclass(slots=True)
class _Write:
    fn: Callable[..., Any]
    args: tuple


@dataclass(slots=True)
class _Append:
    table: str
    columns: tuple[str, ...]
    row: tuple


@dataclass(slots=True)
class _Flush:
    pass


@dataclass
class StoreStats:
    """What the group commit has done so far (read by /metrics and benchmarks)."""

    transactions: int = 0
    writes: int = 0
    last_batch_size: int = 0
    last_commit_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class _DbThread:
    """One OS thread that owns the connection; jobs come in through a queue."""

    def __init__(self, path: Path):
        self.path = path
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="amp-duckdb", daemon=True)
        self.conn: duckdb.DuckDBPyConnection | None = None

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

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the DB thread. Shielded: once handed over, the caller sees it through."""
        reply = Reply()
        self._jobs.put((fn, reply, trio.lowlevel.current_trio_token()))
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


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("amp_runtime.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def apply_migrations(conn: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration newer than `schema_version`, each in its own transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    applied = []
    for version, name, sql in _migrations():
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


class Store(Actor):
    """The coordinator actor: owns the DuckDB connection and batches writes."""

    def __init__(
        self,
        path: Path,
        *,
        group_commit_rows: int = 500,
        group_commit_ms: float = 5.0,
        mailbox_size: int = 4096,
    ):
        super().__init__("coordinator", mailbox_size=mailbox_size)
        self.path = path
        self.group_commit_rows = max(1, group_commit_rows)
        self.linger_s = max(0.0, group_commit_ms) / 1000.0
        self.stats = StoreStats()
        self.applied_migrations: list[int] = []
        self._db = _DbThread(path)

    # -- client side -------------------------------------------------------------------
    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.ask(_Read(fn, args), timeout=float("inf"))

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.ask(_Write(fn, args), timeout=float("inf"))

    async def append(self, table: str, columns: tuple[str, ...], row: tuple) -> None:
        await self.ask(_Append(table, columns, row), timeout=float("inf"))

    async def flush(self) -> None:
        """Returns once every write sent before it is committed."""
        await self.ask(_Flush(), timeout=float("inf"))

    async def execute(self, sql: str, params: Any = None) -> list[tuple]:
        """Convenience read: one statement, all rows."""
        return await self.read(lambda conn: conn.execute(sql, params).fetchall())

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Open the file and migrate, on the DB thread. Raises `StoreError`."""
        self._db.start()

        def open_and_migrate() -> list[int]:
            self._db.conn = _open_connection(self.path)
            return apply_migrations(self._db.conn)

        try:
            self.applied_migrations = await self._db.call(open_and_migrate)
        except BaseException:
            self._db.stop()
            raise
        if self.applied_migrations:
            log.info("store %s: applied migrations %s", self.path, self.applied_migrations)
        else:
            log.info("store %s: schema up to date", self.path)

    async def close_connection(self) -> None:
        """Checkpoint and close the connection; call after `run` returned. Idempotent."""
        def checkpoint_and_close() -> None:
            if self._db.conn is not None:
                self._db.conn.execute("CHECKPOINT")
                self._db.conn.close()
                self._db.conn = None

        if not self._db.is_alive():
            return
        try:
            await self._db.call(checkpoint_and_close)
        finally:
            self._db.stop()

    # -- the actor loop ----------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                first = await self._recv.receive()
            except trio.EndOfChannel:
                return
            batch = [first]
            await self._gather(batch)
            await self._execute(batch)

    async def _gather(self, batch: list) -> None:
        """Take what is waiting; linger briefly for more writes when the batch is small."""
        # A running count: recounting the batch per message was quadratic in the batch size.
        weight = sum(1 for msg, _ in batch if not isinstance(msg, _Read))

        def take(item) -> int:
            batch.append(item)
            return 0 if isinstance(item[0], _Read) else 1

        deadline = trio.current_time() + self.linger_s
        while weight < self.group_commit_rows:
            try:
                weight += take(self._recv.receive_nowait())
                continue
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                return
            if weight == 0 or self.linger_s == 0 or isinstance(batch[-1][0], _Flush):
                return
            with trio.move_on_at(deadline):
                try:
                    weight += take(await self._recv.receive())
                    continue
                except trio.EndOfChannel:
                    return
            return

    async def _execute(self, batch: list[tuple[Any, Reply | None]]) -> None:
        reads = [(m, r) for m, r in batch if isinstance(m, _Read)]
        writes = [(m, r) for m, r in batch if not isinstance(m, _Read)]
        outcomes: list[tuple[Reply | None, bool, Any]] = []
        conn_holder = self._db

        def work() -> None:
            conn = conn_holder.conn
            if writes:
                started = time.perf_counter()
                try:
                    outcomes.extend(self._commit_together(conn, writes))
                except Exception:
                    conn.execute("ROLLBACK")
                    for item in writes:  # isolate the bad one: each alone
                        outcomes.extend(self._commit_alone(conn, item))
                self.stats.transactions += 1
                self.stats.writes += len(writes)
                self.stats.last_batch_size = len(writes)
                self.stats.last_commit_s = time.perf_counter() - started
            for msg, reply in reads:
                try:
                    outcomes.append((reply, True, msg.fn(conn, *msg.args)))
                except Exception as exc:
                    outcomes.append((reply, False, exc))

        await self._db.call(work)
        for reply, ok, value in outcomes:
            if reply is None:
                continue
            if ok:
                reply.set(value)
            else:
                reply.fail(value)

    @staticmethod
    def _commit_together(conn, writes) -> list[tuple[Reply | None, bool, Any]]:
        conn.execute("BEGIN TRANSACTION")
        results = []
        appends: dict[tuple[str, tuple[str, ...]], list[tuple]] = {}
        for msg, reply in writes:
            if isinstance(msg, _Write):
                results.append((reply, True, msg.fn(conn, *msg.args)))
            elif isinstance(msg, _Append):
                appends.setdefault((msg.table, msg.columns), []).append(msg.row)
                results.append((reply, True, None))
            else:
                results.append((reply, True, None))
        for (table, columns), rows in appends.items():
            insert_columns(conn, table, columns, rows)
        conn.execute("COMMIT")
        return results

    @classmethod
    def _commit_alone(cls, conn, item) -> list[tuple[Reply | None, bool, Any]]:
        try:
            return cls._commit_together(conn, [item])
        except Exception as exc:
            conn.execute("ROLLBACK")
            return [(item[1], False, exc)]


def insert_columns(conn, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """One `INSERT ... SELECT unnest(...)` for many rows: ~100x faster than executemany."""
    column_values = [list(values) for values in zip(*rows)]
    selects = ", ".join("unnest(?)" for _ in columns)
    conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selects}", column_values
    )


__all__ = ["Store", "StoreError", "StoreStats", "ActorUnavailable", "insert_columns", "apply_migrations"]
