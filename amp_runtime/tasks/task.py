"""A task's record and what a worker keeps with it: ids, the `Task` itself, its settled form
(`Settled`, as the history keeps it), its `Outcome` slot, and the two ways a slot is taken
without a task of the queue's (`SlotHold` for a job, `Lease` for a sync request)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

import msgspec
import trio

from ..core.clock import rfc3339
from .errors import WorkerFailed
from .models import Delivery, TaskError, TaskResult, TaskView
from .registry import FunctionSpec

_encode = msgspec.json.Encoder().encode
STREAM_BUFFER = 16  # items waiting for a stream reader before the function is paused


class _RandomIds:
    """Random 128-bit task ids, 32 hex digits each, cut from `os.urandom` drawn 256 ids at a
    time: a `urandom` syscall (or `uuid4()`) per task was ~5% of a sync request. Never awaits."""

    DRAW = 256

    def __init__(self) -> None:
        self._digits = ""
        self._at = 0

    def take(self, count: int) -> list[str]:
        if self._at + 32 * count > len(self._digits):
            self._digits = os.urandom(16 * max(count, self.DRAW)).hex()
            self._at = 0
        at = self._at
        self._at = at + 32 * count
        return [self._digits[i:i + 32] for i in range(at, self._at, 32)]


    def take_one(self) -> str:
        """`take(1)[0]` without the list: one id per sync request."""
        at = self._at
        if at + 32 > len(self._digits):
            self._digits = os.urandom(16 * self.DRAW).hex()
            at = 0
        self._at = at + 32
        return self._digits[at:at + 32]


_random_ids = _RandomIds()
new_task_ids = _random_ids.take  # new_task_ids(n): n fresh ids
new_task_id = _random_ids.take_one


class Task:
    """One task's record. Written by whoever runs it (a slot task of its worker, or the sync request
    holding its lease); its worker reads it for lookups and settles it if the worker fails."""

    __slots__ = (
        "id", "spec", "input", "priority", "mode", "webhook", "worker", "status", "result",
        "error", "created_at", "started_at", "finished_at", "started", "deadline", "scope",
        "cancel_reason", "outcome", "items_send", "items_recv", "duration_ms", "deliveries",
        "webhook_status", "finished_mono",
    )

    def __init__(self, task_id: str, spec: FunctionSpec, input: Any, *, priority: int | None,
                 mode: str, timeout_s: float, webhook: Any = None):
        self.id = task_id
        self.spec = spec
        self.input = input
        self.priority = priority
        self.mode = mode
        self.webhook = webhook
        self.worker = ""
        self.status = "queued"
        self.result: Any = None
        self.error: TaskError | None = None
        self.created_at = time.time()  # epoch floats: cheap on the hot path, formatted in view()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.started = 0.0
        self.deadline = trio.current_time() + timeout_s
        self.scope: trio.CancelScope | None = None
        self.cancel_reason: str | None = None  # set when cancelled: the message it settles with if running
        self.outcome = Outcome()
        self.duration_ms: float | None = None
        # Only a webhook task gets deliveries: the others share an empty tuple (one object less
        # for every record the history keeps and every collection walks).
        self.deliveries: list | tuple = [] if mode == "webhook" else ()
        self.webhook_status: str | None = "pending" if mode == "webhook" else None
        self.finished_mono = 0.0
        if mode == "stream":
            self.items_send, self.items_recv = trio.open_memory_channel[bytes](STREAM_BUFFER)
        else:
            self.items_send = self.items_recv = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "timed_out", "cancelled")

    def view(self) -> TaskView:
        return TaskView(
            id=self.id, function=self.spec.name, mode=self.mode, worker=self.worker,
            status=self.status, success=self.status == "completed", priority=self.priority,
            created_at=rfc3339(_moment(self.created_at)),
            started_at=rfc3339(_moment(self.started_at)) if self.started_at else None,
            finished_at=rfc3339(_moment(self.finished_at)) if self.finished_at else None,
            duration_ms=self.duration_ms, result=self.result, error=self.error,
            webhook_url=self.webhook.url if self.webhook is not None else None,
            webhook_status=self.webhook_status, deliveries=list(self.deliveries),
        )

    def record(self) -> bytes:
        """The settled task as the history keeps it (`settled_record`). Raises when its result
        is not JSON (TypeError, RecursionError, ...)."""
        return settled_record(
            self.finished_mono, self.id, self.spec.name, self.mode, self.worker, self.status, self.priority,
            self.created_at, self.started_at, self.finished_at, self.duration_ms, self.result, self.error,
            self.webhook.url if self.webhook is not None else None, self.webhook_status, self.deliveries,
        )

    def result_body(self) -> TaskResult:
        return TaskResult(
            id=self.id, status=self.status, success=self.status == "completed",
            result=self.result, error=self.error, duration_ms=self.duration_ms,
        )


class Settled(msgspec.Struct, array_like=True):
    """A settled task in its worker's history, kept JSON-encoded (`settled_record`): one bytes object
    per record. Evicting the oldest of 10,000 records as a graph of a dozen Python objects (the
    task, its outcome, result, floats, input) touched memory long out of cache: ~25% of a batch
    item's CPU, against ~5% with a keep_results of 100. Decoded only for a lookup."""

    finished_mono: float
    id: str
    function: str
    mode: str
    worker: str
    status: str
    priority: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None
    result: Any
    error: TaskError | None
    webhook_url: str | None
    webhook_status: str | None
    deliveries: list[Delivery]

    def view(self) -> TaskView:
        return TaskView(
            id=self.id, function=self.function, mode=self.mode, worker=self.worker, status=self.status,
            success=self.status == "completed", priority=self.priority, created_at=rfc3339(_moment(self.created_at)),
            started_at=rfc3339(_moment(self.started_at)) if self.started_at else None,
            finished_at=rfc3339(_moment(self.finished_at)) if self.finished_at else None,
            duration_ms=self.duration_ms, result=self.result, error=self.error, webhook_url=self.webhook_url,
            webhook_status=self.webhook_status, deliveries=self.deliveries,
        )


_settled = msgspec.json.Decoder(Settled).decode


def settled_record(finished_mono: float, task_id: str, function: str, mode: str, worker: str, status: str,
                   priority: int | None, created_at: float, started_at: float | None, finished_at: float | None,
                   duration_ms: float | None, result: Any, error: TaskError | None, webhook_url: str | None = None,
                   webhook_status: str | None = None, deliveries: list | tuple = ()) -> bytes:
    """A `Settled` as its worker's history keeps it: its fields in order, JSON-encoded. Raises
    when `result` is not JSON (TypeError, RecursionError, ...)."""
    return _encode((finished_mono, task_id, function, mode, worker, status, priority, created_at, started_at,
                    finished_at, duration_ms, result, error, webhook_url, webhook_status, deliveries))


def not_json_error(exc: Exception) -> TaskError:
    """The error of a task whose result could be neither answered nor kept."""
    return TaskError(type="ResultNotJSON", message=f"the function's result is not JSON: {exc}")


class Outcome:
    """Where a task's result goes once it is settled: set once, awaited by whoever queued it.

    Most outcomes are never awaited (a leased sync task returns its result itself; a batch item
    is reported through `on_set`), so the `trio.Event` is made only when someone waits."""

    __slots__ = ("value", "done", "_event", "on_set")

    def __init__(self) -> None:
        self.value: TaskResult | None = None
        self.done = False
        self._event: trio.Event | None = None
        self.on_set: Any = None  # called with the result: a batch collects its lines this way

    def set(self, value: TaskResult) -> None:
        if self.done:
            return
        self.value = value
        self.done = True
        if self._event is not None:
            self._event.set()
        if self.on_set is not None:
            self.on_set(value)

    async def wait(self) -> TaskResult:
        if not self.done:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        return self.value


class SlotHold:
    """A job occupying a slot: granted when a slot frees, released by its holder (`Unhold`).

    If the worker fails, `failure` is set, `granted` too (a waiter wakes) and `scope` (entered by
    the holder around its work) is cancelled: the job learns at once that its slot is gone."""

    __slots__ = ("holder", "granted", "scope", "failure")

    def __init__(self, holder: str):
        self.holder = holder
        self.granted = trio.Event()
        self.scope = trio.CancelScope()
        self.failure: WorkerFailed | None = None


class Lease:
    """A free slot a worker lends to a sync request, which runs its task in its own task.

    Made by `WorkerActor.admit`, given back once to `WorkerActor.release`; opaque to its holder."""

    __slots__ = ("_task", "_generation")

    def __init__(self, task: Task, generation: object):
        self._task = task
        self._generation: object | None = generation


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def settle(task: Task, status: str, *, result: Any = None, error: TaskError | None = None) -> None:
    """A task's final state; the first settlement wins (a failed worker may settle first)."""
    if task.finished:
        return
    task.status = status
    task.result = result
    task.error = error
    task.finished_at = time.time()
    task.finished_mono = trio.current_time()
    if task.items_send is not None:
        task.items_send.close()
