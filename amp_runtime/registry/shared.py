"""The registry on a PostgreSQL store shared by peers: the `registry_workers` table is the truth.

Any peer may receive any worker's register, report or unregister (a load balancer in front of
the ClearML clients), so no peer's memory holds the latest record. Writes go through the
writer's batches as changes the database merges into the row (`store.apply_changes`); reads
come from the table through `TableView`, which batches concurrent readers into one read that
started after each of them arrived: a client that unregistered at one peer and lists at another
never sees the worker listed again. Expiry is one compare-and-set statement
(`store.expire_workers`) that every peer runs: a worker expires once, and a report that got in
first wins.

Liveness here is judged by the database's clock only: it stamps every heartbeat, the expiry
compares against it, and a read carries it as the "now" its records' ages are measured from.
Peers whose own clocks disagree (by more than `liveness_s`, even) agree on who is live.
"""

from __future__ import annotations

from datetime import datetime

import trio

from ..core.store import Store
from . import store as sql
from .actor import Register, Report, Unregister, is_live
from .models import WorkerRecord
from .writer import RegistryWriter


class _Read:
    """One read of the table, the `number`-th started; `records` stays None if it failed.
    `clock`: the database's time of the read."""

    __slots__ = ("number", "done", "records", "clock")

    def __init__(self, number: int) -> None:
        self.number = number
        self.done = trio.Event()
        self.records: dict[str, WorkerRecord] | None = None
        self.clock: datetime | None = None


class TableView:
    """The workers table read for this process's readers, one read at a time.

    A reader takes the first read that started after it arrived (so it sees every change
    committed before it asked, from any peer); everyone who arrives while a read is in flight
    shares the next one. Not an actor: many readers touch it, and nothing here awaits but a read.
    """

    def __init__(self, store: Store):
        self.store = store
        self._started = 0
        self._pending: _Read | None = None

    async def records(self) -> dict[str, WorkerRecord]:
        """Every worker's record by id (shared with other readers: do not change them)."""
        return (await self.records_and_clock())[0]

    async def records_and_clock(self) -> tuple[dict[str, WorkerRecord], datetime]:
        """Every worker's record by id, and the database's clock when they were read."""
        arrived = self._started
        while True:
            pending = self._pending
            if pending is None:
                return await self._read()
            await pending.done.wait()
            if pending.number > arrived and pending.records is not None:
                return pending.records, pending.clock
            # It started before this reader came (it may miss a change this reader must see),
            # or it failed: join the next read, or start it.

    async def _read(self) -> tuple[dict[str, WorkerRecord], datetime]:
        self._started += 1
        read = self._pending = _Read(self._started)
        try:
            records, read.clock = await self.store.read(sql.load_workers_and_clock)
            read.records = {r.id: r for r in records}
            return read.records, read.clock
        finally:
            read.done.set()
            if self._pending is read:
                self._pending = None


class SharedRecords:
    """The records of every peer on the store, read from and merged into its table."""

    def __init__(self, store: Store):
        self.store = store
        self.view = TableView(store)
        self.writer = RegistryWriter(store, None, changes=True)  # nothing to settle: reads see the table

    async def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.writer.run)

    # A change's `now` (this host's clock) is not written: the database stamps it (change_params).
    async def register(self, msg: Register) -> None:
        await self.writer.persist(workers=[sql.change_params("register", msg)])

    async def report(self, msg: Report, stats: list[tuple], activity: list[tuple]) -> None:
        await self.writer.persist(workers=[sql.change_params("report", msg)], stats=stats, activity=activity)

    async def unregister(self, msg: Unregister) -> None:
        await self.writer.persist(workers=[sql.change_params("unregister", msg)])

    async def expire(self, now: datetime) -> list[str]:
        """`now` (this host's clock) is not used: the expiry runs on the database's clock."""
        return await self.store.write(sql.expire_workers)

    async def get(self, worker: str) -> WorkerRecord | None:
        return (await self.view.records()).get(worker)

    async def all(self) -> list[WorkerRecord]:
        return list((await self.view.records()).values())

    async def live_ids(self, now: datetime, max_age_s: float) -> list[str]:
        return [r.id for r in await self.live_records(now, max_age_s)]

    async def live_records(self, now: datetime, max_age_s: float | None) -> list[WorkerRecord]:
        """Live as of the read's database clock; `now` (this host's clock) is not used."""
        records, db_now = await self.view.records_and_clock()
        return [r for r in records.values() if is_live(r, db_now, max_age_s)]
