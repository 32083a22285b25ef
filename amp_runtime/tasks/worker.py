"""A worker actor: owns one worker's slots, its priority queue and the records of its tasks.

Only the actor's own code changes that state: the handler of its mailbox (cancel, lookup, job
holds, delivery reports), its slot tasks, and the methods the hot path calls without a task
switch -- `admit`, `release`, `run_now`, `set_maintenance` -- none of which awaits, so each runs
atomically between checkpoints (as trio's MemoryChannelState does). Nothing outside reads or writes its
fields; others read what it publishes: `state`, `running_ids()` and the counters for /metrics.

Slots: `slots` long-lived slot tasks take work from a channel only this actor sends on. A sync
request that finds a free slot gets a `Lease` from `admit` and runs its function in its own task
(no hop through the scheduler, ~20% of a request's cost), then hands the lease back to `release`.
A sync request for a function without an await point that finds a free slot goes further:
`run_now` runs it in one step, with no record of it until it is settled (nothing could see one).
Queued work goes to a slot the moment one frees, so a free slot means an empty queue: a lease
never jumps the queue (strict priority: 1 first, FIFO within a priority).

Failure: when any of this code raises, the worker fails as a whole. Every task and job hold it
owes an answer is settled with the cause (a `WorkerFailed` error), the supervisor logs it once
and starts the worker again from nothing: an empty queue, every slot free, a new generation
(leases lent before are then ignored when they come back).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
import traceback
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

import msgspec
import trio

from ..config import WorkerConfig
from ..core.actor import Actor, Reply
from ..core.clock import rfc3339
from ..core.contain import is_cancellation
from ..core.logs import task_id_var
from ..core.words import exception_text
from .errors import Rejected, WorkerFailed
from .models import Delivery, SlotState, TaskError, TaskResult, TaskView
from .process_slots import run_in_process
from .queue import PriorityQueue
from .registry import FunctionSpec

__all__ = ["Rejected", "WorkerFailed", "Task", "new_task_id", "new_task_ids", "Lease", "SlotHold", "WorkerActor",
           "run_sync", "run_leased"]

log = logging.getLogger("amp_runtime.tasks")
_encode = msgspec.json.Encoder().encode
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
STREAM_BUFFER = 16  # items waiting for a stream reader before the function is paused
RUN_AHEAD = 32  # queued tasks a slot runs in a row before a checkpoint: 8 -> 32 was ~5% more batch tasks/s (128: none more)
SETTLE_GRACE_S = 5.0  # past a task's deadline, how long a caller waits for its worker to answer


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


def _not_json(exc: Exception) -> TaskError:
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


# -- mailbox messages ----------------------------------------------------------------------
class Cancel(msgspec.Struct, tag=True):
    """Cancel a queued or running task (DELETE /tasks/{id}, a stream reader gone, or a caller
    whose task outlived its deadline, queued or running: `timed_out`). Answers the task's outcome
    slot (await it for the final state), or None."""

    task_id: str
    timed_out: bool = False


class Hold(msgspec.Struct, tag=True):
    """A job asks for a slot ahead of queued tasks."""

    hold: Any


class Unhold(msgspec.Struct, tag=True):
    """A job gives up its place (granted or not)."""

    hold: Any


class SetMaintenance(msgspec.Struct, tag=True):
    """Maintenance on: new tasks are refused; queued and running ones finish."""

    on: bool


class Lookup(msgspec.Struct, tag=True):
    """The task record with this id as a `TaskView`, or None (kept for a bounded time and count)."""

    task_id: str


class RecordDelivery(msgspec.Struct, tag=True):
    """The webhook sender reports one delivery attempt."""

    task_id: str
    delivery: Any
    final_status: str | None = None


class WorkerActor(Actor):
    def __init__(self, config: WorkerConfig, *, keep_results: int, keep_results_s: float,
                 expose_tracebacks: bool, on_finished=None, before_run=None, mailbox_size: int = 1024):
        super().__init__(config.id, mailbox_size=mailbox_size)
        self.config = config
        self.keep_results = keep_results
        self.keep_results_s = keep_results_s
        self.expose_tracebacks = expose_tracebacks
        self.on_finished = on_finished  # called with each settled webhook task
        self.before_run = before_run  # awaited before a webhook task's function runs (its run journaled)
        self._maintenance = False  # the operator's switch: kept across a restart
        self._history: OrderedDict[str, bytes] = OrderedDict()  # settled tasks: id -> `settled_record(...)`
        self._prune_at = 0.0  # when the oldest record of `_history` outlives keep_results_s
        # Published for /metrics and the dashboard: written only here, monotonic across restarts.
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self.duration_buckets = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.duration_sum_s = 0.0
        self._changed = trio.Event()
        self._watched = False
        self._idle: trio.Event | None = None
        # Threads of tasks that stopped waiting for them (cancelled, timed out, caller gone): each
        # keeps a slot busy until it returns, across restarts too, so slots bound the threads.
        self._abandoned = 0
        self._start_generation()
        self._failure: BaseException | None = None  # set between a failure and the next start

    def _start_generation(self) -> None:
        """Everything a restart rebuilds from nothing: an empty queue, every slot free."""
        self._generation = object()
        self._queue: PriorityQueue[Task | SlotHold] = PriorityQueue()
        self._queued: dict[str, Task] = {}
        self._running: dict[str, Task] = {}  # on a slot task or leased
        self._holds: set[SlotHold] = set()
        self._busy = self._abandoned  # slots running a task, lent, held by a job, or an abandoned thread's
        self._to_slots, self._slot_inbox = trio.open_memory_channel[Task](self.config.slots)
        self._failure = None
        self._failed = trio.Event()
        # The deadline watcher (`_time_out_overdue`) wakes at `_watch_at`, the earliest deadline of
        # a running task when it last looked; `_watch_scope` is its sleep, moved earlier by `_watch`.
        self._watch_at = math.inf
        self._watch_scope: trio.CancelScope | None = None

    # -- published state -------------------------------------------------------------------
    @property
    def state(self) -> SlotState:
        """A snapshot others may read (routing, /health, /metrics, /ws/slots); built when asked."""
        return SlotState(worker=self.name, free=self.config.slots - self._busy, total=self.config.slots,
                         queued=len(self._queue), maintenance=self._maintenance)

    @property
    def abandoned(self) -> int:
        """Busy slots whose task settled while its thread runs on (`thread_abandoned`)."""
        return self._abandoned

    @property
    def maintenance(self) -> bool:
        return self._maintenance

    @property
    def room(self) -> int:
        """Free slots less queued tasks (what routing compares); `state` without building it."""
        return self.config.slots - self._busy - len(self._queue)

    def running_ids(self) -> list[str]:
        """Ids of running tasks and of jobs holding a slot (as their holder name)."""
        return list(self._running) + [h.holder for h in self._holds if h.granted.is_set()]

    def settled_ids(self, limit: int) -> list[str]:
        """Ids of the last `limit` settled tasks the history keeps, newest first."""
        history = iter(reversed(self._history))
        return [task_id for task_id, _ in zip(history, range(limit))]

    async def wait_changed(self) -> None:
        """Returns after the next change of `state`."""
        self._watched = True
        await self._changed.wait()

    async def wait_idle(self) -> None:
        """Returns when nothing is queued or running (used by drain)."""
        while self._busy or self._queue:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    def _publish(self) -> None:
        """Wake whoever waits for a change; nothing to do (and nothing allocated) otherwise."""
        if self._watched:  # only /ws/slots waits on it
            self._watched = False
            self._changed.set()
            self._changed = trio.Event()
        if self._idle is not None and not self._busy and not self._queue:
            self._idle.set()
            self._idle = None

    # -- the hot path: methods that never await --------------------------------------------
    def admit(self, task: Task, *, lease: bool = False) -> Lease | None:
        """Take `task`. Never awaits: atomic between checkpoints.

        With `lease=True` (a sync request) and a free slot, returns a `Lease`: the caller runs
        the task itself (`run_leased`) and gives the lease back. Otherwise the task is queued and
        its outcome arrives on `task.outcome`. Raises `Rejected` (maintenance, queue full,
        duplicate id) or `WorkerFailed` (the worker is failing or restarting)."""
        if self._failure is None and (task.id in self._queued or task.id in self._running):
            raise Rejected(409, "DUPLICATE_TASK_ID", f"task {task.id} is already queued or running")
        self._check_open()
        free = self._busy < self.config.slots
        if not free and len(self._queue) >= self.config.max_queue:
            raise Rejected(429, "QUEUE_FULL", f"worker {self.name}: queue full ({self.config.max_queue} waiting)",
                           retry_after=1)
        task.worker = self.name
        try:
            if lease and free:  # a free slot means nothing is queued: the lease jumps no one
                self._busy += 1
                self._running[task.id] = task
                if task.deadline < self._watch_at:
                    self._watch(task.deadline)
                self._publish()
                return Lease(task, self._generation)
            self._queued[task.id] = task
            self._queue.push(task, task.priority)
            self._dispatch()
            return None
        except Exception as exc:
            self._fail(exc)
            raise WorkerFailed(f"worker {self.name} failed: {_describe(exc)}") from exc

    def run_now(self, spec: FunctionSpec, task_input: Any, task_id: str, priority: int | None,
                webhook_url: str | None = None) -> TaskResult | None:
        """Run a sync task of a function without an await point (`spec.suspends` False) here and
        now on a free slot, and settle it; None when no slot is free (then `admit` queues it).
        Never awaits: atomic between checkpoints.

        Its function finishes in the one step that starts it, so nothing can see the task between
        admission and settlement: it needs no `Task`, no lease, no place among the running, no
        outcome slot and no deadline (nothing could interrupt it). Only its settled record is made
        and counted, as `release` keeps a leased run's (its start is its admission: `started_at`
        equals `created_at`): the `Task` and lease round trip was ~5% of a sync echo request under
        load. Raises `Rejected` (maintenance) or `WorkerFailed`; whatever the function raises,
        SystemExit included, fails its task (`_call_now`)."""
        self._check_open()
        if self._busy >= self.config.slots:
            return None
        started_at = time.time()
        try:
            status, result, error, duration_ms = _call_now(spec.fn, task_input, self.expose_tracebacks, task_id)
        except Exception as exc:  # our code around the function broke, not the function (as `_broke` says)
            log.exception("task %s on worker %s: running it failed", task_id, self.name, extra={"task_id": task_id})
            status, result, duration_ms = "failed", None, None
            error = TaskError(type="WorkerFailed", message=f"running the task failed: {_describe(exc)}")
        status, result, error = self._keep_settled(spec.name, task_id, priority, webhook_url, started_at,
                                                   status, result, error, duration_ms)
        return TaskResult(id=task_id, status=status, success=status == "completed", result=result,
                          error=error, duration_ms=duration_ms)

    def _keep_settled(self, function: str, task_id: str, priority: int | None, webhook_url: str | None,
                      started_at: float, status: str, result: Any, error: TaskError | None,
                      duration_ms: float | None) -> tuple[str, Any, TaskError | None]:
        """Keep and count a task `run_now` settled; its (status, result, error), failed when its
        result is not JSON. Books that break fail the worker, not the answer (as in `release`)."""
        finished_at, finished_mono = time.time(), trio.current_time()
        try:
            try:
                record = settled_record(finished_mono, task_id, function, "sync", self.name, status, priority,
                                        started_at, started_at, finished_at, duration_ms, result, error, webhook_url)
            except Exception as exc:  # msgspec: TypeError, RecursionError, ...
                status, result, error = "failed", None, _not_json(exc)
                record = settled_record(finished_mono, task_id, function, "sync", self.name, status, priority,
                                        started_at, started_at, finished_at, duration_ms, result, error, webhook_url)
            self._keep(task_id, record, finished_mono)
            self._count(function, "sync", status, duration_ms)
        except Exception as exc:
            self._fail(exc)
        return status, result, error

    def _check_open(self) -> None:
        """Raises `WorkerFailed` while the worker fails or restarts, `Rejected` in maintenance."""
        if self._failure is not None:
            raise WorkerFailed(f"worker {self.name} is restarting after a failure")
        if self._maintenance:
            raise Rejected(503, "MAINTENANCE", f"worker {self.name} is in maintenance mode")

    def release(self, lease: Lease) -> None:
        """Take a lease back once its task is settled. Never awaits: atomic between checkpoints.

        A lease lent before a restart is ignored: that generation's books are closed."""
        if lease._generation is not self._generation:
            return
        lease._generation = None
        task = lease._task
        try:
            self._record(task)  # first: if it breaks, the task is still on the books to answer
            del self._running[task.id]
            self._busy -= 1
            self._dispatch()
        except Exception as exc:  # the caller keeps its (settled) answer; the worker fails
            self._fail(exc)

    def thread_abandoned(self) -> None:
        """A task stopped waiting for its function's thread (`_in_thread`), which runs on: it keeps
        a slot busy until `thread_returned`. Never awaits."""
        self._abandoned += 1
        self._busy += 1
        self._publish()

    def thread_returned(self) -> None:
        """An abandoned thread returned: its slot is free. Called from the thread through the trio
        token (`run_sync_soon`), where an exception would end the run: it fails the worker instead."""
        try:
            self._abandoned -= 1
            self._busy -= 1
            self._dispatch()
        except Exception as exc:
            self._fail(exc)

    def set_maintenance(self, on: bool) -> None:
        """Maintenance on refuses new tasks; queued and running ones finish. Never awaits."""
        self._maintenance = on
        self._publish()

    def _fail(self, exc: BaseException) -> None:
        """A method called from another task broke the books: the worker's own task fails with it."""
        if self._failure is None:
            self._failure = exc
            self._failed.set()

    # -- the actor -------------------------------------------------------------------------
    async def run(self) -> None:
        if self._generation is None:  # restarted after a failure: rebuild from nothing
            self._start_generation()
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.config.slots):
                    nursery.start_soon(self._slot, self._slot_inbox)
                nursery.start_soon(self._fail_when_told)
                nursery.start_soon(self._time_out_overdue)
                await super().run()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            self._close_books(exc)
            raise
        self._close_books(None)

    def _watch(self, deadline: float) -> None:
        """Wake the deadline watcher at `deadline` (earlier than it planned). Never awaits."""
        self._watch_at = deadline
        if self._watch_scope is not None:
            self._watch_scope.deadline = deadline

    async def _time_out_overdue(self) -> None:
        """Cancels the scope of each running task past its deadline (its run then settles it
        `timed_out`). One watcher per worker, waking at the earliest deadline among its running
        tasks (at most `slots` of them), instead of a deadline on each task's scope: a trio
        deadline costs a registration and a removal per task, ~20% of a batch item's CPU.
        A task not started by its deadline never starts (`run_task`)."""
        while True:
            with trio.CancelScope(deadline=self._watch_at) as self._watch_scope:
                await trio.sleep_forever()
            now = trio.current_time()
            watch_at = math.inf
            for task in self._running.values():
                if task.deadline > now:
                    watch_at = min(watch_at, task.deadline)
                elif task.scope is not None:
                    task.scope.cancel()
            self._watch_at = watch_at

    async def _fail_when_told(self) -> None:
        await self._failed.wait()
        raise WorkerFailed(f"worker {self.name} failed: {_describe(self._failure)}") from self._failure

    async def handle(self, msg: Any, reply: Reply | None) -> None:
        answer = None
        match msg:
            case Cancel(task_id=task_id, timed_out=timed_out):
                answer = self._cancel(task_id, timed_out)
            case Hold(hold=hold):
                self._holds.add(hold)
                self._queue.push(hold, 0)
                self._dispatch()
            case Unhold(hold=hold):
                self._unhold(hold)
            case SetMaintenance(on=on):
                self.set_maintenance(on)
            case Lookup(task_id=task_id):
                task = self._running.get(task_id) or self._queued.get(task_id)
                record = self._history.get(task_id) if task is None else None
                settled = _settled(record) if record else None
                if settled is not None and settled.finished_mono < trio.current_time() - self.keep_results_s:
                    settled = None  # past keep_results_s; pruned when the next task settles
                answer = task.view() if task is not None else settled.view() if settled is not None else None
            case RecordDelivery(task_id=task_id, delivery=delivery, final_status=final):
                record = self._history.get(task_id)
                if record is not None:
                    settled = _settled(record)
                    settled.deliveries.append(delivery)
                    if final is not None:
                        settled.webhook_status = final
                    self._history[task_id] = _encode(settled)
        if reply is not None:
            reply.set(answer)

    def _dispatch(self, *, take: bool = False) -> Task | None:
        """Hand queued work to free slots, highest priority first; then tell whoever watches.
        With `take` (a slot that just freed), the first task handed out is returned to run there."""
        taken = None
        while self._queue and self._busy < self.config.slots:
            item = self._queue.pop()
            if isinstance(item, SlotHold):
                self._busy += 1
                item.granted.set()
                continue
            if trio.current_time() >= item.deadline:
                settle(item, "timed_out", error=TaskError(type="Timeout", message="timed out waiting in the queue"))
                self._record(item)
                del self._queued[item.id]
                continue
            self._busy += 1
            self._running[item.id] = self._queued.pop(item.id)
            if item.deadline < self._watch_at:
                self._watch(item.deadline)
            if take and taken is None:
                taken = item
            else:
                self._to_slots.send_nowait(item)  # room for every slot: never blocks
        self._publish()
        return taken

    def _unhold(self, hold: SlotHold) -> None:
        if hold not in self._holds:
            return  # given up before a restart: that generation is gone
        self._holds.discard(hold)
        if hold.granted.is_set():
            self._busy -= 1
        else:
            self._queue.remove(hold)
        self._dispatch()

    def cancel(self, task_id: str, *, timed_out: bool = False, reason: str | None = None) -> Outcome | None:
        """Cancel a queued or running task; its outcome slot, or None when the worker has no such
        task. `reason`: the message a running task settles with. Never awaits: atomic between
        checkpoints (a batch withdraws its items this way; a client gone its sync task)."""
        try:
            return self._cancel(task_id, timed_out, reason)
        except Exception as exc:
            self._fail(exc)
            raise WorkerFailed(f"worker {self.name} failed: {_describe(exc)}") from exc

    def _cancel(self, task_id: str, timed_out: bool, reason: str | None = None) -> Outcome | None:
        """The task's outcome slot when the task was queued or running, else None."""
        task = self._queued.get(task_id)
        if task is not None:
            self._queue.remove(task)
            if timed_out:
                settle(task, "timed_out", error=TaskError(type="Timeout", message="timed out waiting in the queue"))
            else:
                settle(task, "cancelled", error=TaskError(type="Cancelled", message="cancelled before it started"))
            self._record(task)
            del self._queued[task_id]
            self._publish()
            return task.outcome
        task = self._running.get(task_id)
        if task is not None:
            if not timed_out:  # a caller giving up at the deadline: the run settles it `timed_out`
                task.cancel_reason = reason or "cancelled while running"
            if task.scope is not None:
                task.scope.cancel()
            return task.outcome
        return None

    # -- slots -----------------------------------------------------------------------------
    async def _slot(self, inbox: trio.MemoryReceiveChannel[Task]) -> None:
        async for task in inbox:
            ran = 0
            while task is not None:
                if task.mode == "webhook" and self.before_run is not None:
                    await self.before_run(task)  # a Cancel meanwhile is kept: `_start` settles it
                await run_task(task, self)
                self._record(task)  # first: if it breaks, the task is still on the books to answer
                del self._running[task.id]
                self._busy -= 1
                ran += 1
                # The next queued task runs right here, not through the channel and a scheduler pass
                # (~25% less CPU per batch item); every RUN_AHEAD tasks the slot lets others run.
                task = self._dispatch(take=ran < RUN_AHEAD)

    def _record(self, task: Task) -> None:
        """Bookkeeping of a settled task: history, counters, its waiter, its webhook."""
        self._remember(task)  # first: it may find the result is not JSON, and fail the task
        self._count(task.spec.name, task.mode, task.status, task.duration_ms)
        task.outcome.set(task.result_body())
        if task.mode == "webhook" and self.on_finished is not None:
            self.on_finished(task)

    def _remember(self, task: Task) -> None:
        """Keep the settled task for lookups, within keep_results and keep_results_s.

        A result that is not JSON could be neither answered nor kept: the task fails instead."""
        try:
            record = task.record()
        except Exception as exc:  # msgspec: TypeError, RecursionError, ...
            task.status, task.result, task.error = "failed", None, _not_json(exc)
            record = task.record()
        self._keep(task.id, record, task.finished_mono)

    def _keep(self, task_id: str, record: bytes, finished_mono: float) -> None:
        """Add a settled record to the history; drop what is past keep_results or keep_results_s."""
        history = self._history
        history[task_id] = record
        if len(history) > self.keep_results:
            history.popitem(last=False)
        if finished_mono < self._prune_at:
            return  # the oldest record is younger than keep_results_s: no need to look (per task)
        horizon = finished_mono - self.keep_results_s
        while history and _settled(next(iter(history.values()))).finished_mono < horizon:
            history.popitem(last=False)
        oldest = _settled(next(iter(history.values()))).finished_mono if history else 0.0
        self._prune_at = oldest + self.keep_results_s if history else 0.0

    def _count(self, function: str, mode: str, status: str, duration_ms: float | None) -> None:
        """The counters /metrics publishes: outcomes, and the duration of tasks that ran."""
        key = (function, mode, status)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if duration_ms is not None:
            seconds = duration_ms / 1000.0
            self.duration_buckets[bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1
            self.duration_sum_s += seconds

    def _close_books(self, cause: BaseException | None) -> None:
        """Settle every task and job hold this generation owes an answer, then forget them.

        Runs when the worker stops (drained or cancelled) or fails; each caller is answered even
        if answering another one raises."""
        stopped = cause is None or is_cancellation(cause)
        reason = f"worker {self.name} stopped" if stopped else f"worker {self.name} failed: {_describe(cause)}"
        self._generation = None  # leases lent so far are stale
        if self._failure is None:
            self._failure = cause or WorkerFailed(reason)
        for task in [*self._queued.values(), *self._running.values()]:
            try:
                task.cancel_reason = reason
                if task.scope is not None:
                    task.scope.cancel()  # a lease holder still running it stops now
                settle(task, "failed", error=TaskError(type="WorkerFailed", message=reason))
                self._remember(task)
                task.outcome.set(task.result_body())
                if task.mode == "webhook" and self.on_finished is not None:
                    self.on_finished(task)
            except Exception:
                log.exception("worker %s: could not settle task %s", self.name, task.id, extra={"task_id": task.id})
        for hold in self._holds:
            hold.failure = WorkerFailed(reason)
            hold.granted.set()
            hold.scope.cancel()
        self._queued, self._running, self._holds = {}, {}, set()
        self._queue = PriorityQueue()
        self._busy = self._abandoned  # their threads still run: the slots stay taken
        self._publish()


def _describe(exc: BaseException | None) -> str:
    """The first real cause inside `exc` (skipping exception groups and cancellations)."""
    if isinstance(exc, BaseExceptionGroup):
        causes = [e for e in exc.exceptions if not is_cancellation(e)]
        return _describe(causes[0] if causes else exc.exceptions[0])
    if isinstance(exc, WorkerFailed) and exc.__cause__ is not None:
        return _describe(exc.__cause__)
    return f"{type(exc).__name__}: {exception_text(exc)}" if exc is not None else "unknown cause"


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


async def run_task(task: Task, worker: WorkerActor) -> None:
    """Run the function within the task's deadline on a slot of `worker` and settle the task with
    its outcome. Cancellation from outside (the caller's scope) propagates; the task is then not settled."""
    if not task.spec.suspends:
        return run_task_now(task, worker.expose_tracebacks)
    if not _start(task):
        return
    result = None
    # A plain scope: its worker's deadline watcher cancels it when the task runs past its deadline.
    with trio.CancelScope() as scope:
        task.scope = scope
        status, result, error = await _run_function(task, worker)
    task.scope = None  # a finished task is not cancelled; the history need not keep its scope alive
    if scope.cancelled_caught:
        if task.cancel_reason is not None:
            status, error = "cancelled", TaskError(type="Cancelled", message=task.cancel_reason)
        else:
            status, error = "timed_out", TaskError(type="Timeout", message="the function ran past its timeout")
    task.duration_ms = round((time.perf_counter() - task.started) * 1000, 3)
    settle(task, status, result=result, error=error)


def run_task_now(task: Task, expose_tracebacks: bool) -> None:
    """`run_task` for a function without an await point (`FunctionSpec.suspends` False), without
    awaiting: its coroutine ends in its first step, which `send(None)` runs here. Nothing could
    cancel it, so it needs no cancel scope, and no coroutine of ours around it (together ~a third
    of a sync echo's CPU)."""
    if not _start(task):
        return
    status, result, error, task.duration_ms = _call_now(task.spec.fn, task.input, expose_tracebacks, task.id)
    settle(task, status, result=result, error=error)


def _call_now(fn: Any, task_input: Any, expose_tracebacks: bool,
              task_id: str) -> tuple[str, Any, TaskError | None, float]:
    """(status, result, error, duration_ms) of a function without an await point, whose coroutine
    ends in the one step `send(None)` runs here."""
    started = time.perf_counter()
    logged_as = task_id_var.set(task_id)  # what the function logs names its task
    try:
        coroutine = fn(task_input)  # a call that fails (a wrong signature) fails the task only
        coroutine.send(None)
    except StopIteration as returned:
        status, result, error = "completed", returned.value, None
    except BaseException as exc:  # SystemExit & co. too (nothing here can be a cancellation: no await)
        status, result, error = "failed", None, _function_error(exc, expose_tracebacks)
    else:  # it suspended after all (`registry.may_suspend` missed an await point): never resumed
        coroutine.close()
        status, result, error = "failed", None, TaskError(
            type="WorkerFailed", message="the function awaited, but it was taken for one without an await point")
    finally:
        task_id_var.reset(logged_as)
    return status, result, error, round((time.perf_counter() - started) * 1000, 3)


def _start(task: Task) -> bool:
    """Mark the task running, or settle it when it must not start (False). Never awaits."""
    if task.finished:  # settled before it started (its worker failed)
        return False
    if task.cancel_reason is not None:  # cancelled between admission and start
        settle(task, "cancelled", error=TaskError(type="Cancelled", message="cancelled before it started"))
        return False
    if trio.current_time() >= task.deadline:  # the deadline watcher cancels started tasks only
        settle(task, "timed_out", error=TaskError(type="Timeout", message="timed out before it started"))
        return False
    task.status = "running"
    task.started_at = time.time()
    task.started = time.perf_counter()
    return True


async def _run_function(task: Task, worker: WorkerActor) -> tuple[str, Any, TaskError | None]:
    """The function's (status, result, error); cancellation propagates."""
    spec = task.spec
    logged_as = task_id_var.set(task.id)  # what the function logs names its task (threads inherit it)
    try:
        return "completed", await (spec.fn(task.input) if spec.kind == "async" else _call(task, worker)), None
    except _ReaderGone:
        return "cancelled", None, TaskError(type="Cancelled", message="the stream reader went away")
    except BaseException as exc:  # SystemExit & co. too: they fail this task, not the server
        if is_cancellation(exc):
            raise
        return "failed", None, _function_error(exc, worker.expose_tracebacks)
    finally:
        task_id_var.reset(logged_as)


def _function_error(exc: BaseException, expose_tracebacks: bool) -> TaskError:
    return TaskError(type=type(exc).__name__, message=exception_text(exc) or type(exc).__name__,
                     traceback=traceback.format_exc() if expose_tracebacks else None)


async def run_leased(worker: WorkerActor, lease: Lease, task: Task) -> TaskResult:
    """Run a sync task in the caller's own task on a slot `worker.admit` lent it.

    The lease goes back whatever happens, also when the caller is cancelled (client gone)."""
    try:
        await run_task(task, worker)
    except Exception as exc:  # our code around the function broke, not the function: say so, once
        _broke(worker, task, exc)
    finally:
        if not task.finished:  # the caller was cancelled
            task.cancel_reason = "the client went away"
            task.duration_ms = round((time.perf_counter() - task.started) * 1000, 3)
            settle(task, "cancelled", error=TaskError(type="Cancelled", message="the client went away"))
        worker.release(lease)
    # The worker's record of it is the answer (one result object, not two); a stale lease is not
    # recorded, but the failed worker settled the task then.
    return task.outcome.value if task.outcome.done else task.result_body()


def _broke(worker: WorkerActor, task: Task, exc: Exception) -> None:
    """Our code around the function broke, not the function: say so, once."""
    log.exception("task %s on worker %s: running it failed", task.id, worker.name, extra={"task_id": task.id})
    settle(task, "failed", error=TaskError(type="WorkerFailed", message=f"running the task failed: {_describe(exc)}"))


async def wait_outcome(worker: WorkerActor, task: Task) -> TaskResult:
    """The outcome of a queued task, within its deadline plus a grace.

    A task still queued at its deadline is expired through the worker's mailbox; a worker that
    does not answer even then raises `WorkerFailed`. A cancelled caller cancels its task."""
    try:
        with trio.move_on_at(task.deadline + 0.5):
            return await task.outcome.wait()
        worker.tell_nowait(Cancel(task.id, timed_out=True))
        with trio.move_on_after(SETTLE_GRACE_S):
            return await task.outcome.wait()
        raise WorkerFailed(f"worker {worker.name} did not settle task {task.id}")
    finally:
        if not task.outcome.done:  # the caller went away: free the queue place or the slot
            worker.tell_nowait(Cancel(task.id))


async def run_sync(worker: WorkerActor, task: Task) -> TaskResult:
    """A sync task's outcome: on a lent slot when one is free, else through the queue.

    Raises `Rejected` (queue full, maintenance) or `WorkerFailed`."""
    lease = worker.admit(task, lease=True)
    if lease is not None:
        return await run_leased(worker, lease, task)
    return await wait_outcome(worker, task)


async def _call(task: Task, worker: WorkerActor) -> Any:
    spec = task.spec
    if spec.kind == "thread":
        return await _in_thread(worker, spec.fn, task.input)
    if spec.kind == "process":  # a timeout or cancel kills the worker process
        return await run_in_process(spec.fn, task.input)
    agen = spec.fn(task.input)
    try:
        if task.mode != "stream":  # a streaming function asked for one answer: all items
            return [item async for item in agen]
        # Items go out as they come; a full buffer pauses the generator.
        async with task.items_send as send:
            async for item in agen:
                try:
                    data = _encode(item)
                except Exception as exc:  # as a result that is not JSON fails its task (`_remember`)
                    raise ResultNotJSON(f"an item the function yielded is not JSON: {exc}") from None
                await send.send(data)
        return None
    except trio.BrokenResourceError:
        raise _ReaderGone() from None
    finally:
        await agen.aclose()


class _Thread:
    """A function's thread as its task sees it: returned, or abandoned by a task that stopped waiting."""

    __slots__ = ("lock", "returned", "abandoned")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held for two assignments: never blocks the loop for long
        self.returned = False
        self.abandoned = False


async def _in_thread(worker: WorkerActor, fn: Any, task_input: Any) -> Any:
    """`fn(task_input)` in a thread. A task cancelled meanwhile settles at once (trio abandons the
    thread), but the thread keeps a slot of `worker` until it returns: slots bound the threads."""
    token = trio.lowlevel.current_trio_token()
    thread = _Thread()

    def run() -> Any:
        try:
            return fn(task_input)
        finally:
            with thread.lock:
                thread.returned = True
                abandoned = thread.abandoned
            if abandoned:
                try:
                    token.run_sync_soon(worker.thread_returned)
                except trio.RunFinishedError:  # the runtime is gone: no slot to give back
                    pass

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    except trio.Cancelled:
        with thread.lock:
            thread.abandoned = not thread.returned
        if thread.abandoned:
            worker.thread_abandoned()
        raise


class _ReaderGone(Exception):
    """A stream's reader went away."""


class ResultNotJSON(Exception):
    """A streamed item JSON cannot express: its task fails with this error type."""
