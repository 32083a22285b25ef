"""Group commit for the registry: every change of every worker goes through one writer.

Callers add their rows to the open batch and wait; the writer commits a batch while the next
one fills, as one store transaction with one `INSERT ... SELECT unnest(...)` per table. So
1,000 workers reporting every second cost a few transactions per second, not thousands, and
since batches commit one after the other a worker's later change always lands after its
earlier one.
"""

from __future__ import annotations

import trio

from ..core.store import Store
from . import store as sql


class PersistError(Exception):
    """The batch this change was in could not be committed."""


class _Batch:
    __slots__ = ("workers", "stats", "activity", "done", "error")

    def __init__(self) -> None:
        self.workers: list[tuple] = []
        self.stats: list[tuple] = []
        self.activity: list[tuple] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


class RegistryWriter:
    def __init__(self, store: Store):
        self.store = store
        self._open = _Batch()
        self._wake = trio.Event()

    async def persist(self, *, workers: list[tuple] = (), stats: list[tuple] = (), activity: list[tuple] = ()) -> None:
        """Returns once the rows are committed; raises `PersistError` if their batch failed.

        A cancelled caller's rows are still committed with their batch.
        """
        batch = self._open
        batch.workers.extend(workers)
        batch.stats.extend(stats)
        batch.activity.extend(activity)
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise PersistError(f"registry write failed: {batch.error}") from batch.error

    async def run(self) -> None:
        """Commit batches until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._open = self._open, _Batch()
            try:
                await self.store.write(sql.write_batch, batch.workers, batch.stats, batch.activity)
            except Exception as exc:
                batch.error = exc
            batch.done.set()
