"""Group commit for the registry: every change of every worker goes through one writer.

Callers add their records and rows to the open batch and wait; the writer commits a batch while
the next one fills, as one store transaction with one `INSERT ... SELECT unnest(...)` per table.
So 1,000 workers reporting every second cost a few transactions per second, not thousands, and
since batches commit one after the other a worker's later change always lands after its
earlier one. After each commit the writer tells the registry actor which records are now saved
(or not): it does so itself, so a caller that gave up waiting cannot leave a change unsettled.
On a store shared by peers (`changes=True`) it carries changes instead of whole records
(`store.change_params`): the database merges each into the stored row.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from ..core.actor import Outage, is_outage
from ..core.http import ApiError
from ..core.store import Store
from . import store as sql
from .models import WorkerRecord

log = logging.getLogger("amp_runtime.registry")


class PersistError(ApiError, Outage):
    """The batch this change was in could not be committed; the change was not applied. An
    outage: the store was away or the connection broke under it (logged by the store)."""

    def __init__(self) -> None:
        super().__init__(503, "STORE_UNAVAILABLE", "the registry could not save this change to the store, "
                         "so it was not applied: retry", headers={"Retry-After": "1"})


Settle = Callable[[list[WorkerRecord], bool], Awaitable[None]]


class _Batch:
    __slots__ = ("workers", "stats", "activity", "done", "error")

    def __init__(self) -> None:
        self.workers: list[WorkerRecord] = []
        self.stats: list[tuple] = []
        self.activity: list[tuple] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


class RegistryWriter:
    def __init__(self, store: Store, settle: Settle | None, *, changes: bool = False):
        self.store = store
        self.settle = settle
        self.changes = changes
        self._open = _Batch()
        self._wake = trio.Event()

    async def persist(
        self, *, workers: list[WorkerRecord] | list[tuple[str, dict]] = (), stats: list[tuple] = (),
        activity: list[tuple] = (),
    ) -> None:
        """Returns once the rows are committed; raises `PersistError` (a 503) if their batch failed.
        `workers`: proposed records, or with `changes=True` the changes (`store.change_params`).

        A cancelled caller's rows are still committed (and settled) with their batch.
        """
        batch = self._open
        batch.workers.extend(workers)
        batch.stats.extend(stats)
        batch.activity.extend(activity)
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise PersistError() from batch.error

    async def run(self) -> None:
        """Commit batches until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._open = self._open, _Batch()
            try:
                if self.changes:
                    rows = batch.workers
                    await self.store.write(sql.write_batch, [], batch.stats, batch.activity, rows)
                else:
                    rows = [sql.record_row(rec) for rec in batch.workers]
                    await self.store.write(sql.write_batch, rows, batch.stats, batch.activity)
            except Exception as exc:
                if not is_outage(exc):  # the store says when it is away, once
                    log.warning("registry: a batch of %d change(s) was not saved: %s", len(rows) + len(batch.stats), exc)
                batch.error = exc
            if batch.workers and self.settle is not None:
                await self.settle(batch.workers, batch.error is None)
            batch.done.set()
