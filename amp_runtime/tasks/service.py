"""The task service: worker actors, webhook sender, routing and the runtime's tags."""

from __future__ import annotations

import platform
import sys
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import msgspec
import trio

from .. import __version__
from ..core.service import ServiceBase
from . import builtin  # noqa: F401  (registers the built-in functions)
from .idempotency import IdempotencyTable
from .journal import TaskJournal
from .models import TaskRequest
from .recovery import resume_accepted
from .registry import FUNCTIONS, FunctionSpec
from .webhooks import Deliver, WebhookSender
from .worker import Cancel, Hold, Lookup, RecordDelivery, Rejected, SetMaintenance, Submit, Task, Unhold, WorkerActor


class WorkerSnapshot(msgspec.Struct):
    """One worker's capacity as the registry, /health and /ws/slots see it."""

    worker: str
    total: int
    free: int
    queued: int
    maintenance: bool
    running: list[str] = []  # ids of running tasks (and jobs holding a slot, as "job:<id>")


class TaskService(ServiceBase):
    def __init__(self, runtime):
        super().__init__(runtime)
        tasks = self.config.tasks
        self.journal = TaskJournal(self.store)  # journal: accepted webhook tasks survive restarts
        self.idempotency = IdempotencyTable(keep_s=tasks.keep_results_s, max_entries=tasks.keep_results)
        self.webhooks = WebhookSender(self.config.webhook, self.journal)
        self.workers: dict[str, WorkerActor] = {
            w.id: WorkerActor(
                w, keep_results=tasks.keep_results, keep_results_s=tasks.keep_results_s,
                expose_tracebacks=tasks.expose_tracebacks, on_finished=self._send_webhook,
                mailbox_size=self.config.actors.mailbox_size,
            )
            for w in self.config.workers
        }
        self.maintenance = False
        self.open_streams = 0
        self.tags: dict[str, str] = {
            "python": platform.python_version(),
            "amp_runtime": __version__,
            "trio": trio.__version__,
            "platform": sys.platform,
        }
        for tag in tasks.tags:
            name, _, value = tag.partition("=")
            self.tags[name] = value or "true"

    def actors(self) -> list:
        return [self.webhooks, *self.workers.values()]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # journal: before HTTP opens, load the journaled keys; then resume what was promised
        recovered = await self.journal.recover(keep_s=self.config.tasks.keep_results_s)
        self.idempotency.load(recovered.keys)
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            nursery.start_soon(resume_accepted, self, recovered)
            task_status.started()

    # -- routing ---------------------------------------------------------------------------
    def worker_ids(self) -> list[str]:
        return list(self.workers)

    def function(self, name: str) -> FunctionSpec | None:
        return FUNCTIONS.get(name)

    def pick_worker(self, spec: FunctionSpec, named: str | None) -> WorkerActor:
        """The named worker, or the one serving the function's group with most free capacity."""
        if self.maintenance:
            raise Rejected(503, "MAINTENANCE", "the runtime is in maintenance mode")
        if named is not None:
            return self.workers[named]
        best, best_room, serving = None, None, 0
        for worker in self.workers.values():
            if spec.group not in worker.config.groups:
                continue
            serving += 1
            state = worker.state
            if state.maintenance:
                continue
            room = state.free - state.queued
            if best_room is None or room > best_room:
                best, best_room = worker, room
        if best is None:
            if serving:
                raise Rejected(503, "MAINTENANCE", f"every worker of group {spec.group!r} is in maintenance")
            raise Rejected(404, "NO_WORKER", f"no worker serves group {spec.group!r}")
        return best

    def new_task(self, request: TaskRequest, spec: FunctionSpec) -> Task:
        timeout = spec.timeout_s if spec.timeout_s is not None else self.config.tasks.default_timeout_s
        return Task(uuid.uuid4().hex, spec, request.input, priority=request.priority,
                    mode=request.mode, timeout_s=timeout, webhook=request.webhook)

    def cancel_nowait(self, task: Task) -> None:
        self.workers[task.worker].tell_nowait(Cancel(task.id))

    async def cancel(self, task_id: str) -> Any:
        """The cancelled task's outcome (await it for the final state), or None."""
        for worker in self.workers.values():
            outcome = await worker.ask(Cancel(task_id))
            if outcome is not None:
                return outcome
        return None

    async def lookup(self, task_id: str) -> Any:
        """The task's `TaskView`, or None."""
        for worker in self.workers.values():
            task = await worker.ask(Lookup(task_id))
            if task is not None:
                return task
        return await self.journal.get(task_id)  # journal: webhook tasks across restarts

    def _send_webhook(self, task: Task) -> None:
        worker = self.workers[task.worker]

        def report(task_id: str, delivery: Any, final: str | None) -> None:
            worker.tell_nowait(RecordDelivery(task_id, delivery, final))

        self.webhooks.tell_nowait(Deliver(task.id, task.webhook.url, dict(task.webhook.headers),
                                          task.result_body(), report))

    # -- maintenance and capacity --------------------------------------------------------
    async def set_maintenance(self, on: bool) -> None:
        self.maintenance = on
        for worker in self.workers.values():
            await worker.ask(SetMaintenance(on))

    async def snapshot(self) -> list[WorkerSnapshot]:
        return [
            WorkerSnapshot(w.name, w.state.total, w.state.free, w.state.queued, w.state.maintenance,
                           w.running_ids())
            for w in self.workers.values()
        ]

    @asynccontextmanager
    async def hold_slot(self, worker_id: str, holder: str) -> AsyncIterator[None]:
        """Occupy one slot of `worker_id` for the body (a running job). Waits for a free slot
        ahead of queued tasks; raises KeyError for an unknown worker."""
        worker = self.workers[worker_id]
        from .worker import SlotHold

        hold = SlotHold(holder)
        await worker.ask(Hold(hold))
        try:
            await hold.granted.wait()
            yield
        finally:
            if not worker.tell_nowait(Unhold(hold)):
                with trio.CancelScope(shield=True):
                    await worker.tell(Unhold(hold))

    def stop_accepting(self) -> None:
        self.maintenance = True
        for worker in self.workers.values():
            worker.tell_nowait(SetMaintenance(True))

    async def drain(self) -> None:
        for worker in self.workers.values():
            await worker.wait_idle()
        await self.webhooks.wait_idle()
