"""The registry on a PostgreSQL store shared by peers: the `registry_workers` table is the truth.

Any peer may receive any worker's register, report or unregister (a load balancer in front of
the ClearML clients), so no peer's memory holds the latest record. Writes go through the
writer's batches as changes the database merges into the row (`store.apply_changes`); reads
come from the table through `TableView`, shared by concurrent readers for at most
`VIEW_MAX_AGE_S` and dropped by every local write, so a client reads its own change at once and
another peer's within that age. Expiry is one compare-and-set statement (`store.expire_workers`)
that every peer runs: a worker expires once, and a report that got in first wins.
"""

from __future__ import annotations

import math
from datetime import datetime

import trio

from ..core.store import Store
from . import store as sql
from .actor import Register, Report, Unregister, is_live
from .models import WorkerRecord
from .writer import RegistryWriter

VIEW_MAX_AGE_S = 0.2  # well under a heartbeat: another peer's change shows within this


class _Read:
    """One read of the table in flight or done; `records` stays None if it failed."""

    __slots__ = ("generation", "done", "records", "read_at")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.done = trio.Event()
        self.records: dict[str, WorkerRecord] | None = None
        self.read_at = -math.inf


class TableView:
    """The workers table as last read, shared by every reader of this process.

    Not an actor: readers and the writer's callback all touch it, and nothing here awaits but
    the one read in flight, which later readers join instead of reading again. `invalidate` (a
    local write committed) bumps the generation: a reader never takes a read started before the
    last write it could have seen.
    """

    def __init__(self, store: Store, max_age_s: float = VIEW_MAX_AGE_S):
        self.store = store
        self.max_age_s = max_age_s
        self._generation = 0
        self._last: _Read | None = None
        self._pending: _Read | None = None

    def invalidate(self) -> None:
        self._generation += 1

    async def records(self) -> dict[str, WorkerRecord]:
        """Every worker's record by id (shared: do not change them)."""
        wanted = self._generation
        while True:
            last = self._last
            if (last is not None and last.generation >= wanted
                    and trio.current_time() - last.read_at <= self.max_age_s):
                return last.records
            pending = self._pending
            if pending is not None and pending.generation >= wanted:
                await pending.done.wait()
                if pending.records is not None:
                    return pending.records
                continue  # it failed (or its reader was cancelled): read ourselves
            await self._read()

    async def _read(self) -> None:
        read = _Read(self._generation)
        self._pending = read
        started = trio.current_time()
        try:
            records = await self.store.read(sql.load_workers)
            read.records = {r.id: r for r in records}
            read.read_at = started
            if self._last is None or self._last.generation <= read.generation:
                self._last = read
        finally:
            read.done.set()
            if self._pending is read:
                self._pending = None


class SharedRecords:
    """The records of every peer on the store, read from and merged into its table."""

    def __init__(self, store: Store):
        self.store = store
        self.view = TableView(store)
        self.writer = RegistryWriter(store, self._written, changes=True)

    async def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.writer.run)

    async def _written(self, changes: list, ok: bool) -> None:
        self.view.invalidate()  # also when refused: a batch may have failed after its commit

    async def register(self, msg: Register) -> None:
        await self.writer.persist(workers=[sql.change_params("register", msg)])

    async def report(self, msg: Report, stats: list[tuple], activity: list[tuple]) -> None:
        await self.writer.persist(workers=[sql.change_params("report", msg)], stats=stats, activity=activity)

    async def unregister(self, msg: Unregister) -> None:
        await self.writer.persist(workers=[sql.change_params("unregister", msg)])

    async def expire(self, now: datetime) -> list[str]:
        expired = await self.store.write(sql.expire_workers, now)
        if expired:
            self.view.invalidate()
        return expired

    async def get(self, worker: str) -> WorkerRecord | None:
        return (await self.view.records()).get(worker)

    async def all(self) -> list[WorkerRecord]:
        return list((await self.view.records()).values())

    async def live_ids(self, now: datetime, max_age_s: float) -> list[str]:
        return [r.id for r in (await self.view.records()).values() if is_live(r, now, max_age_s)]
