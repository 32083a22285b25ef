"""The store actor: the one database connection, on the one thread that touches it.

Other actors never see the connection. They send the store work as plain functions of
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

Outages: while the store is unreachable (or a statement has been on the thread too long) it is
*unavailable*: a new ask fails at once with `StoreUnavailable` (a coded 503), and so does every
ask still waiting in the mailbox, which is withdrawn: it never runs. A write already handed to
the database is answered as soon as its transaction is known committed or rolled back. The
thread reconnects with capped, jittered backoff until the store is back (or, with a non-zero
`reconnect_s`, raises `StoreGone`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio

from .actor import Actor, ActorUnavailable, Reply
from .availability import (
    ABANDONED, LOST_IN_COMMIT, LOST_READ, LOST_WRITE, RECONNECT_MAX_DELAY_S, Availability, StoreUnavailable,
    unavailable_error,
)
from .database import (
    DbThread, DuckDBBackend, StoreBackend, StoreError, StoreGone, WorkerIdClaimed, advisory_key, apply_migrations,
    insert_columns, lock_for_transaction,
)

from .store_messages import Append, Closing, ConnectionLost, Read, StoreStats, Write

log = logging.getLogger("amp_runtime.store")


RECONNECT_FIRST_DELAY_S = 0.05
# One statement on the thread this long (a big batch that moves on is not a stall) makes the store
# unavailable to new and queued asks: their callers get a 503 within two seconds, not a hang.
STALL_S = 1.5
WATCH_S = 0.25  # how often a batch on the thread is looked at (stall, stop)
# Stopping while the database answers nothing (a frozen server): the thread is left behind (a
# daemon, gone with the process) after this long, so the exit is not held hostage.
ABANDON_AFTER_S = 1.0
QUEUE_FULL_WAIT_S = 1.0  # a full mailbox is waited on this long, then the ask is a 503


class Store(Actor):
    """The store actor: owns the database connection and batches writes. A broken
    connection is reconnected on the DB thread; the writes of the failed batch are answered at
    once, its reads run again on the new connection (outages: see the module docstring)."""

    def __init__(
        self,
        target: Path | StoreBackend,
        *,
        group_commit_rows: int = 500,
        group_commit_ms: float = 5.0,
        mailbox_size: int = 4096,
        reconnect_s: float = 0.0,
        claim_check_s: float = 5.0,
    ):
        super().__init__("store", mailbox_size=mailbox_size)
        self.backend: StoreBackend = DuckDBBackend(target) if isinstance(target, Path) else target
        self.group_commit_rows = max(1, group_commit_rows)
        self.linger_s = max(0.0, group_commit_ms) / 1000.0
        self.reconnect_s = max(0.0, reconnect_s)  # 0: reconnect for as long as it takes
        self.claim_check_s = claim_check_s
        self.stats = StoreStats()
        self.applied_migrations: list[int] = []
        self.reconnects = 0
        self._db = DbThread(self.backend.name)
        self._commit_sent = False  # DB thread: a COMMIT is on its way (if lost now, the outcome is unknown)
        self._steps = 0  # DB thread counts the statements it got through; the stall watch reads it
        self._abandoned = False  # stopped while the thread was stuck on the database
        self._token: trio.lowlevel.TrioToken | None = None
        self._closing = threading.Event()  # wakes a reconnect loop when the process stops
        self.availability = Availability(self.backend.describe(), STALL_S, _can_withdraw)

    # -- client side -------------------------------------------------------------------
    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._ask(Read(fn, args))

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._ask(Write(fn, args))

    async def append(self, table: str, columns: tuple[str, ...], row: tuple) -> None:
        """Insert one row; returns once committed. Appends of one group commit share one insert."""
        await self._ask(Append(table, columns, row))

    async def execute(self, sql: str, params: Any = None) -> list[tuple]:  # one statement, all rows
        return await self.read(lambda conn: conn.execute(sql, params).fetchall())

    @property
    def unavailable(self) -> str | None:
        """Why the store cannot answer now, or None when it can (for /ready and /health)."""
        return self.availability.reason

    def available_for(self) -> float:
        """Seconds since the store last came back (0 while away): a judge of silence waits it out."""
        return self.availability.available_for()

    async def until_available(self) -> None:  # at once when it answers
        await self.availability.until_available()

    def append_soon(self, table: str, columns: tuple[str, ...], row: tuple) -> Callable[[], Awaitable[None]]:
        """Queue one row now, ahead of every ask made after it (so it commits in the same group
        commit as they do, or an earlier one); await what it returns to know it committed. Where
        it cannot be queued now (the store away, its mailbox full), the await asks then."""
        msg = Append(table, columns, row)
        reply = self._queue_nowait(msg) if self.availability.reason is None else None
        return (lambda: self._answer(reply)) if reply is not None else (lambda: self._ask(msg))

    def _queue_nowait(self, msg: Any) -> Reply | None:
        reply = Reply()
        self.availability.pending[reply] = msg  # before sending: an outage withdraws it while it waits
        try:
            self._send.send_nowait((msg, reply))
            return reply
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.availability.pending.pop(reply, None)
            return None

    async def _answer(self, reply: Reply) -> Any:
        try:
            return await reply.wait()
        finally:
            self.availability.pending.pop(reply, None)

    async def _ask(self, msg: Any) -> Any:
        reason = self.availability.reason
        if reason is not None:
            raise unavailable_error(reason)
        reply = self._queue_nowait(msg)
        if reply is not None:
            return await self._answer(reply)
        reply = Reply()
        pending = self.availability.pending
        pending[reply] = msg
        try:
            try:
                with trio.move_on_after(QUEUE_FULL_WAIT_S) as waited:
                    await self._send.send((msg, reply))
                if waited.cancelled_caught:
                    raise StoreUnavailable("the store is not keeping up (its queue is full): retry later") from None
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ActorUnavailable(f"actor {self.name} is stopped") from None
            return await reply.wait()
        finally:
            pending.pop(reply, None)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:  # from the DB thread to trio's
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    @staticmethod
    def _deliver(answers: list[tuple[Reply, tuple[bool, Any]]]) -> None:
        for reply, (ok, value) in answers:
            if ok:
                reply.set(value)
            else:
                reply.fail(value)

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and migrate, on the DB thread. Raises `StoreError`."""
        self._token = trio.lowlevel.current_trio_token()
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

    def stop_waiting(self) -> None:
        """The process is stopping: a reconnect gives up, a database that does not answer is left
        behind (its callers answered 503), so no caller holds the exit. A healthy store is unaffected."""
        self._closing.set()
        if self.unavailable is not None:
            self.availability.withdraw("the process is stopping")

    def close(self) -> None:
        """Stop accepting asks; `run` commits what is queued and returns (see `stop_waiting`)."""
        super().close()
        self.stop_waiting()

    def _give_up(self) -> None:
        self._abandoned = True
        self.availability.stopping = True
        self.availability.withdraw("the process is stopping")

    async def close_connection(self) -> None:
        """Checkpoint and close the connection; call after `run` returned. Idempotent."""
        def checkpoint_and_close() -> None:
            if self._db.conn is not None:
                self.backend.close(self._db.conn)
                self._db.conn = None

        if not self._db.is_alive():
            return
        if self._abandoned:  # its thread is still waiting on the database: do not queue behind it
            log.warning("store %s: closed without a checkpoint (the database did not answer)", self.backend.describe())
            return
        try:
            await self._db.call(checkpoint_and_close)
        except Exception as exc:  # a store away at the end: nothing left to flush there
            log.warning("store %s: closing failed (%s)", self.backend.describe(), _first_line(exc))
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
            if trio.current_time() >= next_claim_check and not self._abandoned:
                # A claim's session may die alone (terminated, server restarted while idle).
                try:
                    await self._on_thread(lambda: self._retrying("re-claiming the worker ids", self.backend.check_claims))
                except Closing:
                    self._give_up()
                next_claim_check = trio.current_time() + self.claim_check_s

    async def _on_thread(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the DB thread and see it through (shielded: the thread's own bounds and
        `_closing` end it); `STALL_S` without a statement done makes the store unavailable until one is."""
        reply = self._db.submit(fn)
        with trio.CancelScope(shield=True):
            seen, moved_at = self._steps, trio.current_time()
            while not reply.done:
                with trio.move_on_after(WATCH_S):
                    await reply.settled()
                now = trio.current_time()
                if self._steps != seen:
                    seen, moved_at = self._steps, now
                self.availability.set_slow(not reply.done and now - moved_at >= STALL_S)
                if not reply.done and self._closing.is_set() and now - moved_at >= ABANDON_AFTER_S:
                    raise Closing()
        return await reply.wait()

    async def _gather(self, batch: list) -> None:
        """Take what is waiting; linger briefly for more writes when the batch is small."""
        # A running count: recounting the batch per message was quadratic in the batch size.
        weight = sum(1 for msg, _ in batch if not isinstance(msg, Read))

        def take(item) -> int:
            batch.append(item)
            return 0 if isinstance(item[0], Read) else 1

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
        # An ask already answered was withdrawn (an outage, a full queue): it must never run.
        batch = [(m, r) for m, r in batch if r is None or not r.done]
        for msg, _ in batch:
            msg.sent = True
        reads = [(m, r) for m, r in batch if isinstance(m, Read)]
        writes = [(m, r) for m, r in batch if not isinstance(m, Read)]
        done: dict[int, tuple[bool, Any]] = {}  # index in writes + reads -> (ok, result or error)
        if not batch:
            return
        if self._abandoned:  # stopping, and the thread stuck or the store gone: these never run
            self._deliver([(r, (False, unavailable_error("the process is stopping"))) for _, r in batch if r])
            return

        def work() -> None:
            try:
                self._run_batch(writes, reads, done)
            except ConnectionLost as lost:
                self._recover(writes, reads, done, lost.__cause__)

        try:
            await self._on_thread(work)
        except Closing:
            self._give_up()
        finally:
            # Whatever happened, every caller gets an answer (a second one is ignored).
            lost = ABANDONED if self._abandoned else LOST_WRITE
            self._deliver([(reply, done.get(i, (False, StoreUnavailable(lost if i < len(writes) else LOST_READ))))
                           for i, (_, reply) in enumerate(writes + reads) if reply is not None])

    # -- on the DB thread --------------------------------------------------------------
    def _raise_if_lost(self, conn: Any, exc: BaseException) -> None:
        if self.backend.is_lost(conn, exc):
            raise ConnectionLost() from exc

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
            self._steps += 1

    def _recover(self, writes: list, reads: list, done: dict[int, tuple[bool, Any]], cause: BaseException | None) -> None:
        """Answer the writes now (not saved), reconnect, retry the reads that still wait."""
        reason = _first_line(cause)
        lost = LOST_IN_COMMIT if self._commit_sent else LOST_WRITE  # before COMMIT, the server rolls it back
        for i in range(len(writes)):
            done.setdefault(i, (False, StoreUnavailable(lost)))
        # Their callers learn at once, however long the store stays away.
        self._post(self._deliver, [(reply, done[i]) for i, (_, reply) in enumerate(writes) if reply is not None])
        self._reconnect(reason)
        conn = self._db.conn
        for i, (msg, reply) in enumerate(reads, start=len(writes)):
            if i in done or (reply is not None and reply.done):  # withdrawn meanwhile
                continue
            try:
                done[i] = (True, msg.fn(conn, *msg.args))
            except Exception as exc:
                done[i] = (False, StoreUnavailable(LOST_READ) if self.backend.is_lost(conn, exc) else exc)

    def _reconnect(self, reason: str) -> None:
        old, self._db.conn = self._db.conn, None
        try:
            old.close()
        except Exception:
            pass  # it is broken already

        def connect() -> None:
            self._db.conn = self.backend.connect()
            self.backend.check_claims()  # a server restart dropped them with their session

        self._retrying("reconnecting", connect, lost=reason)
        self.reconnects += 1
        log.info("store %s: reconnected", self.backend.describe())

    def _retrying(self, doing: str, step: Callable[[], None], *, lost: str | None = None) -> None:
        """Run `step` until it does not raise StoreError, with capped exponential backoff and
        jitter; the store is unavailable from the first failure (or `lost`) until it succeeds.
        Gives up (`StoreGone`) only past a non-zero `reconnect_s`. A lost worker-id claim is final."""
        deadline = time.monotonic() + self.reconnect_s if self.reconnect_s else None
        delay = RECONNECT_FIRST_DELAY_S
        failed = False
        while True:
            if self._closing.is_set():
                raise Closing()
            try:
                step()
                break
            except WorkerIdClaimed:
                raise
            except StoreError as exc:
                last = exc
            if not failed:
                # One refused attempt makes an outage; a session that reconnects at once is a blip.
                self._post(self.availability.went_away, lost or _first_line(last))
                failed = True
            if deadline is not None and time.monotonic() + delay > deadline:
                raise StoreGone(
                    f"the store {self.backend.describe()} is unreachable: gave up {doing} after "
                    f"{self.reconnect_s:g}s ([store] reconnect_s): {last}"
                ) from None
            self._closing.wait(delay * random.uniform(0.5, 1.0))  # jitter: peers do not come back in step
            delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
        if failed:
            self._post(self.availability.came_back)

    def _rollback(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception as exc:
            # The connection's state is unknown (DuckDB may have ended the transaction itself): a
            # fresh one is the safe way on, not an error that would end the store actor.
            raise ConnectionLost() from exc

    def _commit_together(self, conn, writes) -> list[tuple[bool, Any]]:
        self._commit_sent = False
        conn.execute("BEGIN TRANSACTION")
        results = []
        appends: dict[tuple[str, tuple[str, ...]], list[tuple]] = {}
        for msg, _ in writes:
            if isinstance(msg, Append):
                appends.setdefault((msg.table, msg.columns), []).append(msg.row)
                results.append((True, None))
            else:
                results.append((True, msg.fn(conn, *msg.args)))
            self._steps += 1
        for (table, columns), rows in appends.items():
            insert_columns(conn, table, columns, rows)
            self._steps += 1
        self._commit_sent = True
        conn.execute("COMMIT")
        self._commit_sent = False
        return results

    def _commit_alone(self, conn, item) -> tuple[bool, Any]:
        try:
            return self._commit_together(conn, [item])[0]
        except Exception as exc:
            self._raise_if_lost(conn, exc)
            self._rollback(conn)
            return (False, exc)


def _can_withdraw(msg: Any) -> bool:
    """A read never has an effect; a write has none until it is handed to the DB thread."""
    return isinstance(msg, Read) or not msg.sent


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "Store", "StoreError", "StoreGone", "StoreUnavailable", "WorkerIdClaimed", "StoreStats", "StoreBackend",
    "DuckDBBackend", "ActorUnavailable", "insert_columns", "apply_migrations", "advisory_key", "lock_for_transaction",
]
