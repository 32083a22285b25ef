"""The progress writer: persists per-table job progress with group commit.

Runners `report` absolute progress after each file without waiting for the disk. The writer
takes everything waiting, keeps the latest row per (job, table), and persists it in one store
transaction, so a job writing thousands of files does not cost thousands of fsyncs. `flush`
returns once everything reported before it is durable (a job flushes before it is reported
Completed or Stopped). Progress may lag the files on disk after a crash; a resumed job then
rewrites those files under the same names with the same bytes, never duplicating rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from ..core.actor import Actor, Reply, is_outage, log_failure
from ..core.clock import utcnow
from . import store as jobs_store
from .store import ProgressRow

log = logging.getLogger("amp_runtime.jobs")


@dataclass(slots=True)
class _Flush:
    pass


class ProgressWriter(Actor):
    def __init__(self, store, *, mailbox_size: int = 4096):
        super().__init__("jobs-progress", mailbox_size=mailbox_size)
        self.store = store
        # Rows an outage kept out of the store: they go with the next commit (a later row of the
        # same job and table replaces one), so a store that comes back loses no progress.
        self._unsaved: dict[tuple[int, str], ProgressRow] = {}

    async def report(self, row: ProgressRow) -> None:
        """Queue `row` for the next commit (waits only when the mailbox is full)."""
        await self.tell(row)

    async def flush(self) -> None:
        """Returns once every row reported before this call is durable; raises if it failed."""
        await self.ask(_Flush(), timeout=float("inf"))

    async def run(self) -> None:
        while True:
            try:
                batch = [await self._recv.receive()]
            except trio.EndOfChannel:
                return
            while True:
                try:
                    batch.append(self._recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[object, Reply | None]]) -> None:
        latest, self._unsaved = self._unsaved, {}
        waiters: list[Reply] = []
        for msg, reply in batch:
            if isinstance(msg, ProgressRow):
                latest[(msg.job_id, msg.table)] = msg
            if reply is not None:
                waiters.append(reply)
        error: Exception | None = None
        if latest:
            try:
                await self.store.write(jobs_store.upsert_progress, list(latest.values()), utcnow())
            except Exception as exc:  # progress lags; the files will be rewritten on resume
                log_failure(log, exc, "persisting job progress failed")
                error = exc
                if is_outage(exc):
                    self._unsaved = latest
        for reply in waiters:
            if error is None:
                reply.set(None)
            else:
                reply.fail(error)
