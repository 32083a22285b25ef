"""Where the registry's worker records live: one process's memory (DuckDB) or the shared table
(PostgreSQL). The service talks to either through the same methods.

- `LocalRecords`: the registry actor keeps the truth in memory and writes through (actor.py);
  the one process on its DuckDB file sees every change, so reads never touch the store.
- `SharedRecords` (shared.py): peers on one PostgreSQL store; the table is the truth.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

import trio

from ..core.actor import ActorUnavailable, supervise
from ..core.store import Store
from .actor import Expire, GetAll, GetOne, LiveIds, Register, RegistryActor, Report, Settled, Unregister, is_live
from .models import WorkerRecord
from .writer import RegistryWriter


class LocalRecords:
    """The actor's records, persisted through the writer and shown once saved."""

    def __init__(self, store: Store, *, mailbox_size: int, ask_timeout: float, max_restarts_per_minute: int):
        self.actor = RegistryActor(store, mailbox_size=mailbox_size, ask_timeout=ask_timeout)
        self.writer = RegistryWriter(store, self._settled)
        self._max_restarts = max_restarts_per_minute

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(partial(supervise, self.actor, max_restarts_per_minute=self._max_restarts))
        nursery.start_soon(self.writer.run)

    async def _settled(self, records: list[WorkerRecord], ok: bool) -> None:
        """The writer's word on proposed records: the actor shows them only once they are saved."""
        try:
            await self.actor.tell(Settled(records, ok))
        except ActorUnavailable:
            pass  # stopped: a restarted actor rebuilds from the store, where they are (or are not)

    async def register(self, msg: Register) -> None:
        await self.writer.persist(workers=[await self.actor.ask(msg)])

    async def report(self, msg: Report, stats: list[tuple], activity: list[tuple]) -> None:
        await self.writer.persist(workers=[await self.actor.ask(msg)], stats=stats, activity=activity)

    async def unregister(self, msg: Unregister) -> None:
        proposed = await self.actor.ask(msg)
        if proposed is not None:
            await self.writer.persist(workers=[proposed])

    async def expire(self, now: datetime) -> list[str]:
        records = await self.actor.ask(Expire(now))
        if records:
            await self.writer.persist(workers=records)
        return [r.id for r in records]

    async def get(self, worker: str) -> WorkerRecord | None:
        return await self.actor.ask(GetOne(worker))

    async def all(self) -> list[WorkerRecord]:
        return await self.actor.ask(GetAll())

    async def live_ids(self, now: datetime, max_age_s: float) -> list[str]:
        return await self.actor.ask(LiveIds(now, max_age_s))

    async def live_records(self, now: datetime, max_age_s: float | None) -> list[WorkerRecord]:
        return [r for r in await self.all() if is_live(r, now, max_age_s)]
