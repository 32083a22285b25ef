"""What the dashboard page needs beyond the public API: an overview of slots, running tasks
and settled-task counters, built from what the task service publishes.

Recent tasks: the workers keep their finished tasks private, so the overview lists the tasks
running now (from `tasks.snapshot()`, looked up through `tasks.lookup`); the page remembers
those it saw and fetches their final state from `GET /tasks/{id}`. Tasks too short to be seen
running show up in the per-function counters instead.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from ..core.assets import PackagedAssets

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "application/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
MAX_RUNNING_SHOWN = 50  # lookups per overview are bounded, whatever the slot count


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
    outcomes = [
        OutcomeCount(worker=worker_id, function=function, mode=mode, status=status, count=count)
        for worker_id, worker in tasks.workers.items()
        for (function, mode, status), count in sorted(worker.outcomes.items())
    ]
    return Overview(workers=workers, running=running, outcomes=outcomes,
                    webhook_deliveries=dict(tasks.webhooks.outcomes))


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
