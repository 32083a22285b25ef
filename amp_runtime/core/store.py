"""The coordinator's store: the one database connection, on the one thread that touches it.

Other actors never see the connection. They send the coordinator work as plain functions of
the connection:

- `await store.read(fn, *args)`   runs `fn(conn, *args)` and returns its result;
- `await store.write(fn, *args)`  runs it inside a group-commit transaction and returns once
  that transaction is durable (bulk rows go through `insert_columns` inside such a write).

Backends: the embedded DuckDB file (the default, `DuckDBBackend`) or PostgreSQL
(`core.postgres.PostgresBackend`, chosen by `[store] url`). Store functions are written once with
DuckDB's placeholders (`?`, `$name`); the PostgreSQL connection translates them.

Group commit: while one transaction is on the thread, new writes pile up in the mailbox and
leave together as the next one (bounded by `group_commit_rows`); an idle store lingers at most
`group_commit_ms` for company. A write that fails alone fails only its own caller.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Protocol

import duckdb
import trio

from .actor import Actor, ActorUnavailable, Reply
from .http import ApiError

log = logging.getLogger("amp_runtime.store")

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class StoreError(Exception):
    """The store cannot be opened (locked by another process, unreadable, ...), or it is gone
    for longer than `[store] reconnect_s`: the process reports it in one line and exits."""


class WorkerIdClaimed(StoreError):
    """Another live process on the same store holds one of this process's worker ids."""


class StoreUnavailable(ApiError):
    """The connection broke under this request's write (it may or may not have been committed)
    or under a read retried once. An ApiError so that any route answers it as a coded 503."""

    def __init__(self, message: str):
        super().__init__(503, "STORE_UNAVAILABLE", message, headers={"Retry-After": "1"})


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
    """One row for `table`: the rows of a group commit go in as one column-wise insert."""

    table: str
    columns: tuple[str, ...]
    row: tuple


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
        return _open_connection(self.path)

    def migrate(self, conn: duckdb.DuckDBPyConnection) -> list[int]:
        return apply_migrations(conn)

    def close(self, conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("CHECKPOINT")
        conn.close()

    def is_lost(self, conn: Any, exc: BaseException) -> bool:
        return False  # an embedded file: there is no connection to lose

    def claim_worker_ids(self, ids: list[str]) -> None:
        pass  # the file lock already keeps a second process off this store

    def check_claims(self) -> None:
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


class _ConnectionLost(Exception):
    """Raised on the DB thread when a statement failed because the connection broke."""


RECONNECT_FIRST_DELAY_S = 0.05
RECONNECT_MAX_DELAY_S = 2.0
LOST_WRITE = ("the store connection was lost while committing this change; it may not have been saved: "
              "retry (the store reconnects)")
LOST_READ = "the store connection was lost and a read retried after reconnecting failed again: retry"


class Store(Actor):
    """The coordinator actor: owns the database connection and batches writes.

    A broken connection (PostgreSQL restarted, the backend terminated) is reconnected on the DB
    thread with capped exponential backoff for up to `reconnect_s`: the writes of the failed batch
    fail their callers with `StoreUnavailable` (never acknowledged), its reads run once more on the
    new connection, later messages wait in the mailbox. Past the bound, `run` raises `StoreError`.
    (So a shielded `call` lasts at most `reconnect_s` plus one connect timeout.)
    """

    def __init__(
        self,
        target: Path | StoreBackend,
        *,
        group_commit_rows: int = 500,
        group_commit_ms: float = 5.0,
        mailbox_size: int = 4096,
        reconnect_s: float = 30.0,
        claim_check_s: float = 5.0,
    ):
        super().__init__("coordinator", mailbox_size=mailbox_size)
        self.backend: StoreBackend = DuckDBBackend(target) if isinstance(target, Path) else target
        self.group_commit_rows = max(1, group_commit_rows)
        self.linger_s = max(0.0, group_commit_ms) / 1000.0
        self.reconnect_s = max(0.0, reconnect_s)
        self.claim_check_s = claim_check_s
        self.stats = StoreStats()
        self.applied_migrations: list[int] = []
        self.reconnects = 0
        self._db = _DbThread(self.backend.name)

    # -- client side -------------------------------------------------------------------
    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.ask(_Read(fn, args), timeout=float("inf"))

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.ask(_Write(fn, args), timeout=float("inf"))

    async def append(self, table: str, columns: tuple[str, ...], row: tuple) -> None:
        """Insert one row; returns once committed. Appends of one group commit share one insert."""
        await self.ask(_Append(table, columns, row), timeout=float("inf"))

    async def execute(self, sql: str, params: Any = None) -> list[tuple]:
        """Convenience read: one statement, all rows."""
        return await self.read(lambda conn: conn.execute(sql, params).fetchall())

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and migrate, on the DB thread. Raises `StoreError`."""
        self._db.start()

        def open_and_migrate() -> list[int]:
            self._db.conn = self.backend.connect()
            return self.backend.migrate(self._db.conn)

        try:
            self.applied_migrations = await self._db.call(open_and_migrate)
        except BaseException:
            self._db.stop()
            raise
        if self.applied_migrations:
            log.info("store %s: applied migrations %s", self.backend.describe(), self.applied_migrations)
        else:
            log.info("store %s: schema up to date", self.backend.describe())

    async def claim_worker_ids(self, ids: list[str]) -> None:
        """Hold this process's worker ids for its life (PostgreSQL: advisory locks on a session of
        their own). Raises `WorkerIdClaimed` when a live peer holds one. Call after `open`."""
        await self._db.call(lambda: self.backend.claim_worker_ids(list(ids)))

    async def close_connection(self) -> None:
        """Checkpoint and close the connection; call after `run` returned. Idempotent."""
        def checkpoint_and_close() -> None:
            if self._db.conn is not None:
                self.backend.close(self._db.conn)
                self._db.conn = None

        if not self._db.is_alive():
            return
        try:
            await self._db.call(checkpoint_and_close)
        finally:
            self._db.stop()

    # -- the actor loop ----------------------------------------------------------------
    async def run(self) -> None:
        next_claim_check = trio.current_time() + self.claim_check_s
        while True:
            first = None
            with trio.move_on_at(next_claim_check):
                try:
                    first = await self._recv.receive()
                except trio.EndOfChannel:
                    return
            if first is not None:
                batch = [first]
                await self._gather(batch)
                await self._execute(batch)
            if trio.current_time() >= next_claim_check:
                # A claim's session may die alone (terminated, server restarted while idle).
                await self._db.call(lambda: self._retrying("re-claiming the worker ids", self.backend.check_claims))
                next_claim_check = trio.current_time() + self.claim_check_s

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
            if weight == 0 or self.linger_s == 0:
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
        done: dict[int, tuple[bool, Any]] = {}  # index in writes + reads -> (ok, result or error)

        def work() -> None:
            try:
                self._run_batch(writes, reads, done)
            except _ConnectionLost as lost:
                self._recover(writes, reads, done, lost.__cause__)

        try:
            # Shielded by `call` once handed over; whatever happens, every caller gets an answer.
            await self._db.call(work)
        finally:
            for i, (_, reply) in enumerate(writes + reads):
                if reply is None:
                    continue
                ok, value = done.get(i, (False, StoreUnavailable(LOST_WRITE if i < len(writes) else LOST_READ)))
                if ok:
                    reply.set(value)
                else:
                    reply.fail(value)

    # -- on the DB thread --------------------------------------------------------------
    def _raise_if_lost(self, conn: Any, exc: BaseException) -> None:
        if self.backend.is_lost(conn, exc):
            raise _ConnectionLost() from exc

    def _run_batch(self, writes: list, reads: list, done: dict[int, tuple[bool, Any]]) -> None:
        conn = self._db.conn
        if writes:
            started = time.perf_counter()
            try:
                done.update(enumerate(self._commit_together(conn, writes)))
            except Exception as exc:
                self._raise_if_lost(conn, exc)
                self._rollback(conn)
                for i, item in enumerate(writes):  # isolate the bad one: each alone
                    done[i] = self._commit_alone(conn, item)
            self.stats.transactions += 1
            self.stats.writes += len(writes)
            self.stats.last_batch_size = len(writes)
            self.stats.last_commit_s = time.perf_counter() - started
        for i, (msg, _) in enumerate(reads, start=len(writes)):
            try:
                done[i] = (True, msg.fn(conn, *msg.args))
            except Exception as exc:
                self._raise_if_lost(conn, exc)
                done[i] = (False, exc)

    def _recover(self, writes: list, reads: list, done: dict[int, tuple[bool, Any]], cause: BaseException | None) -> None:
        """Fail the uncommitted writes, reconnect (or raise StoreError), retry the reads once."""
        log.warning("store %s: connection lost (%s); reconnecting for up to %gs",
                    self.backend.describe(), _first_line(cause), self.reconnect_s)
        for i in range(len(writes)):
            done.setdefault(i, (False, StoreUnavailable(LOST_WRITE)))
        self._reconnect()
        conn = self._db.conn
        for i, (msg, _) in enumerate(reads, start=len(writes)):
            if i in done:
                continue
            try:
                done[i] = (True, msg.fn(conn, *msg.args))
            except Exception as exc:
                done[i] = (False, StoreUnavailable(LOST_READ) if self.backend.is_lost(conn, exc) else exc)

    def _reconnect(self) -> None:
        old, self._db.conn = self._db.conn, None
        try:
            old.close()
        except Exception:
            pass  # it is broken already

        def connect() -> None:
            self._db.conn = self.backend.connect()
            self.backend.check_claims()  # a server restart dropped them with their session

        self._retrying("reconnecting", connect)
        self.reconnects += 1
        log.warning("store %s: reconnected", self.backend.describe())

    def _retrying(self, doing: str, step: Callable[[], None]) -> None:
        """Run `step` until it does not raise StoreError, with capped exponential backoff, for up
        to `reconnect_s`; then raise one StoreError saying so. A lost worker-id claim is final."""
        deadline = time.monotonic() + self.reconnect_s
        delay = RECONNECT_FIRST_DELAY_S
        while True:
            try:
                step()
                return
            except WorkerIdClaimed:
                raise
            except StoreError as exc:
                last = exc
            if time.monotonic() + delay > deadline:
                raise StoreError(
                    f"the store {self.backend.describe()} is unreachable: gave up {doing} after "
                    f"{self.reconnect_s:g}s ([store] reconnect_s): {last}"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_S)

    def _rollback(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception as exc:
            self._raise_if_lost(conn, exc)
            raise

    @staticmethod
    def _commit_together(conn, writes) -> list[tuple[bool, Any]]:
        conn.execute("BEGIN TRANSACTION")
        results = []
        appends: dict[tuple[str, tuple[str, ...]], list[tuple]] = {}
        for msg, _ in writes:
            if isinstance(msg, _Append):
                appends.setdefault((msg.table, msg.columns), []).append(msg.row)
                results.append((True, None))
            else:
                results.append((True, msg.fn(conn, *msg.args)))
        for (table, columns), rows in appends.items():
            insert_columns(conn, table, columns, rows)
        conn.execute("COMMIT")
        return results

    def _commit_alone(self, conn, item) -> tuple[bool, Any]:
        try:
            return self._commit_together(conn, [item])[0]
        except Exception as exc:
            self._raise_if_lost(conn, exc)
            self._rollback(conn)
            return (False, exc)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


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


__all__ = [
    "Store", "StoreError", "StoreUnavailable", "WorkerIdClaimed", "StoreStats", "StoreBackend", "DuckDBBackend",
    "ActorUnavailable", "insert_columns", "apply_migrations", "advisory_key", "lock_for_transaction",
]
