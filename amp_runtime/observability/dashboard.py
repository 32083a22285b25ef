"""What the dashboard page needs beyond the public API: an overview of slots, running tasks
and settled-task counters, built from what the task service publishes.

Recent tasks: the overview lists the tasks running now (from `tasks.snapshot()`) and the last
ones each worker settled (`settled_ids`), looked up through `tasks.lookup`, so a task too short
to be seen running is listed as well as counted; the page remembers those it saw and fetches
the final state of those it saw running from `GET /tasks/{id}`.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from ..core.assets import PackagedAssets
from ..tasks.worker import Lookup

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "application/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
MAX_RUNNING_SHOWN = 50  # lookups per overview are bounded, whatever the slot count
MAX_SETTLED_SHOWN = 30  # as many as the page's "Recent tasks" keeps


class WorkerSlots(msgspec.Struct, kw_only=True):
    worker: str
    total: int
    free: int
    queued: int
    maintenance: bool


class RunningTask(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A task or a job's slot hold (`id` "job:<id>", no function) running on a worker."""

    id: str
    worker: str
    status: str
    function: str | None = None
    mode: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None


class OutcomeCount(msgspec.Struct, kw_only=True):
    worker: str
    function: str
    mode: str
    status: str
    count: int


class Overview(msgspec.Struct, kw_only=True):
    """`GET /ui/api/overview`."""

    workers: list[WorkerSlots]
    running: list[RunningTask]
    settled: list[RunningTask]  # the last settled tasks, newest first
    outcomes: list[OutcomeCount]
    webhook_deliveries: dict[str, int]


async def build_overview(tasks) -> Overview:
    """`tasks`: the task service (snapshot, workers, lookup, webhook outcomes)."""
    workers, running = [], []
    for snap in await tasks.snapshot():
        workers.append(WorkerSlots(worker=snap.worker, total=snap.total, free=snap.free,
                                   queued=snap.queued, maintenance=snap.maintenance))
        for task_id in snap.running:
            if len(running) >= MAX_RUNNING_SHOWN:
                break
            running.append(await _running_task(tasks, snap.worker, task_id))
    settled = await _settled_tasks(tasks)
    outcomes = [
        OutcomeCount(worker=worker_id, function=function, mode=mode, status=status, count=count)
        for worker_id, worker in tasks.workers.items()
        for (function, mode, status), count in sorted(worker.outcomes.items())
    ]
    return Overview(workers=workers, running=running, settled=settled, outcomes=outcomes,
                    webhook_deliveries=dict(tasks.webhooks.outcomes))


async def _settled_tasks(tasks) -> list[RunningTask]:
    """The last settled tasks of every worker, newest first (by finish time across workers)."""
    found = []
    for worker_id, worker in tasks.workers.items():
        for task_id in worker.settled_ids(MAX_SETTLED_SHOWN):
            view = await worker.ask(Lookup(task_id))  # the worker that keeps it: no search
            if view is not None and view.finished_at is not None:
                found.append(RunningTask(id=task_id, worker=view.worker or worker_id, function=view.function,
                                         mode=view.mode, status=view.status, started_at=view.started_at,
                                         finished_at=view.finished_at, duration_ms=view.duration_ms))
    found.sort(key=lambda task: task.finished_at, reverse=True)  # RFC 3339 UTC strings sort as times
    return found[:MAX_SETTLED_SHOWN]


async def _running_task(tasks, worker_id: str, task_id: str) -> RunningTask:
    if task_id.startswith("job:"):
        return RunningTask(id=task_id, worker=worker_id, status="running")
    view = await tasks.lookup(task_id)
    if view is None:  # finished between the snapshot and the lookup
        return RunningTask(id=task_id, worker=worker_id, status="finished")
    return RunningTask(id=task_id, worker=worker_id, function=view.function, mode=view.mode,
                       status=view.status, started_at=view.started_at)


STATIC_ASSETS = PackagedAssets(lambda: STATIC_DIR, STATIC_TYPES)


def static_asset(name: str) -> tuple[bytes, str] | None:
    """The packaged asset `name` and its content type, or None."""
    return STATIC_ASSETS.get(name)
