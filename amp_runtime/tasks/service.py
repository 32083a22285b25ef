"""Stub of the task service; the tasks issue replaces the body, keeping these signatures."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import msgspec

from ..core.service import ServiceBase


class WorkerSnapshot(msgspec.Struct):
    """One worker's capacity as the registry, /health and /ws/slots see it."""

    worker: str
    total: int
    free: int
    queued: int
    maintenance: bool
    running: list[str] = []  # ids of running tasks (and jobs holding a slot, as "job:<id>")


class TaskService(ServiceBase):
    def worker_ids(self) -> list[str]:
        return [w.id for w in self.config.workers]

    async def snapshot(self) -> list[WorkerSnapshot]:
        return [WorkerSnapshot(w.id, w.slots, w.slots, 0, False) for w in self.config.workers]

    @asynccontextmanager
    async def hold_slot(self, worker_id: str, holder: str) -> AsyncIterator[None]:
        """Occupy one slot of `worker_id` for the body (a running job). Waits for a free slot
        ahead of queued tasks; raises KeyError for an unknown worker."""
        if worker_id not in self.worker_ids():
            raise KeyError(worker_id)
        yield
