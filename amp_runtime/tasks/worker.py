"""A worker actor: owns its slots and its priority queue.

`slots` long-lived slot tasks pull from the queue (no task spawned per submission). Callers
hand over a `Task` with `Submit`; its outcome comes back through the task's `outcome` reply
(and, in stream mode, its items through a bounded channel, so a slow reader slows the
function instead of growing memory).

The fast lane: while nothing is queued, the worker offers its free slots as leases on the
`offers` channel. A sync request that receives one runs the function in its own task (no
hop through the scheduler, ~20% of a request's cost) and gives the slot back with `Finished`.
Queued work withdraws every offer first, so leases never jump the queue. A task's record is
written by whoever holds its slot: a slot task, or the lease holder until `Finished`.
"""

from __future__ import annotations

import bisect
import logging
import time
import traceback
from datetime import datetime, timezone
from collections import OrderedDict
from typing import Any

import msgspec
import trio

from ..config import WorkerConfig
from ..core.actor import YIELD_EVERY, Actor, Reply
from ..core.clock import rfc3339
from .models import SlotState, TaskError, TaskResult, TaskView
from .process_slots import run_in_process
from .queue import PriorityQueue
from .registry import FunctionSpec

log = logging.getLogger("amp_runtime.tasks")
_encode = msgspec.json.Encoder().encode
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
STREAM_BUFFER = 16  # items waiting for a stream reader before the function is paused


class Rejected(Exception):
    """The worker refused a task; `status` and `code` say how to answer."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class Task:
    """One task's record. Written only by its worker once submitted."""

    __slots__ = (
        "id", "spec", "input", "priority", "mode", "webhook", "worker", "status", "result",
        "error", "created_at", "started_at", "finished_at", "started", "deadline", "scope",
        "cancel_requested", "outcome", "items_send", "items_recv", "duration_ms", "deliveries",
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
        self.cancel_requested = False
        self.outcome = Reply()
        self.duration_ms: float | None = None
        self.deliveries: list = []
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

    def result_body(self) -> TaskResult:
        return TaskResult(
            id=self.id, status=self.status, success=self.status == "completed",
            result=self.result, error=self.error, duration_ms=self.duration_ms,
        )


class SlotHold:
    """A job occupying a slot: granted when a slot takes it, released by its holder."""

    __slots__ = ("holder", "granted", "released")

    def __init__(self, holder: str):
        self.holder = holder
        self.granted = trio.Event()
        self.released = trio.Event()


# -- mailbox messages ----------------------------------------------------------------------
class Submit(msgspec.Struct, tag=True):
    """A route hands over a task. Rejections arrive as `Rejected` on `task.outcome`."""

    task: Any


class Cancel(msgspec.Struct, tag=True):
    """Cancel a queued or running task (client gone, DELETE /tasks/{id})."""

    task_id: str


class Hold(msgspec.Struct, tag=True):
    """A job asks for a slot ahead of queued tasks."""

    hold: Any


class Unhold(msgspec.Struct, tag=True):
    """A job gives up its place (granted or not)."""

    hold: Any


class Started(msgspec.Struct, tag=True):
    """A lease holder started a task (so Lookup, Cancel and running_ids see it)."""

    task: Any


class Finished(msgspec.Struct, tag=True):
    """A lease holder's task is over. Its slot comes back with this message unless the holder
    already put the lease back on offer (`reoffered`)."""

    task: Any
    reoffered: bool = False


class SetMaintenance(msgspec.Struct, tag=True):
    on: bool


class Lookup(msgspec.Struct, tag=True):
    """The task record with this id, or None (kept for a bounded time and count)."""

    task_id: str


class RecordDelivery(msgspec.Struct, tag=True):
    """The webhook sender reports one delivery attempt."""

    task_id: str
    delivery: Any
    final_status: str | None = None


class WorkerActor(Actor):
    def __init__(self, config: WorkerConfig, *, keep_results: int, keep_results_s: float,
                 expose_tracebacks: bool, on_finished=None, mailbox_size: int = 1024):
        super().__init__(config.id, mailbox_size=mailbox_size)
        self.config = config
        self.keep_results = keep_results
        self.keep_results_s = keep_results_s
        self.expose_tracebacks = expose_tracebacks
        self.on_finished = on_finished  # called with each finished webhook task
        self._queue: PriorityQueue[Task | SlotHold] = PriorityQueue()
        self._queued_tasks: dict[str, Task] = {}
        self._running: dict[str, Task] = {}
        self._holds: set[SlotHold] = set()
        self._history: OrderedDict[str, Task] = OrderedDict()
        self._work = trio.lowlevel.ParkingLot()
        self._idle = trio.Event()
        self.maintenance = False
        # Counters read at scrape time by /metrics; plain ints, no locks on the hot path.
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self.duration_buckets = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.duration_sum_s = 0.0
        self.changed = trio.Event()
        self._watched = False
        self._idle_watched = False
        # Every slot is in exactly one place: offered (in the channel), leased, held by a
        # slot task (running a task or a job's hold), or spare (the actor's, for the queue).
        self._offer, self.offers = trio.open_memory_channel[object](config.slots)
        for _ in range(config.slots):
            self._offer.send_nowait(LEASE)
        self._spare = 0

    # -- published state -------------------------------------------------------------------
    def _busy(self) -> int:
        offered = self._offer.statistics().current_buffer_used
        return self.config.slots - offered - self._spare

    @property
    def state(self) -> SlotState:
        """A snapshot others may read (routing, /health, /ws/slots); built when asked for."""
        return SlotState(worker=self.name, free=self.config.slots - self._busy(), total=self.config.slots,
                         queued=len(self._queue._entries), maintenance=self.maintenance)

    def _publish(self) -> None:
        """Wake whoever waits for a change; nothing to do (and nothing allocated) otherwise."""
        if self._watched:  # only /ws/slots waits on it
            self._watched = False
            self.changed.set()
            self.changed = trio.Event()
        if self._idle_watched and not self._queue and not self._busy():
            self._idle.set()

    async def wait_changed(self) -> None:
        """Returns after the next change of `state`."""
        self._watched = True
        await self.changed.wait()

    def running_ids(self) -> list[str]:
        return list(self._running) + [h.holder for h in self._holds if h.granted.is_set()]

    async def wait_idle(self) -> None:
        """Returns when nothing is queued or running (used by drain)."""
        self._idle_watched = True
        while self._busy() or self._queue:
            self._idle = trio.Event()
            await self._idle.wait()

    def try_lease(self) -> object | None:
        """A free slot for the caller to run a sync task in, or None (then `Submit`)."""
        try:
            return self.offers.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None

    def give_back(self) -> bool:
        """A lease holder puts its lease straight back on offer when nothing waits in the
        queue (the next request can take it before this actor runs). False: send it home."""
        if self._queue or self.maintenance:
            return False
        self._offer.send_nowait(LEASE)
        return True

    def _rebalance(self) -> None:
        """Queued work takes every offered slot; with an empty queue, spare slots are offered."""
        if self._queue or self.maintenance:
            while True:
                try:
                    self.offers.receive_nowait()
                except trio.WouldBlock:
                    break
                self._spare += 1
            if self._queue:
                self._work.unpark(count=self._spare)  # one slot per spare slot, not all of them
        else:
            while self._spare:
                self._offer.send_nowait(LEASE)
                self._spare -= 1
        self._publish()

    # -- the actor -------------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.config.slots):
                nursery.start_soon(self._slot)
            await super().run()
            nursery.cancel_scope.cancel()

    async def handle(self, msg: Any, reply: Reply | None) -> None:
        match msg:
            case Submit(task=task):
                self._submit(task)  # a rejection fails task.outcome
                if reply is not None:
                    reply.set(None)
            case Cancel(task_id=task_id):
                outcome = self._cancel(task_id)
                if reply is not None:
                    reply.set(outcome)
            case Hold(hold=hold):
                self._holds.add(hold)
                self._queue.push(hold, 0)
                self._rebalance()
                if reply is not None:
                    reply.set(None)
            case Unhold(hold=hold):
                self._queue.remove(hold)
                self._holds.discard(hold)
                hold.released.set()
                self._rebalance()
            case SetMaintenance(on=on):
                self.maintenance = on
                self._rebalance()
                if reply is not None:
                    reply.set(None)
            case Started(task=task):
                self._running[task.id] = task
                self._publish()
            case Finished(task=task, reoffered=reoffered):
                self._running.pop(task.id, None)
                self._record(task)
                if reoffered:
                    self._publish()
                else:
                    self._spare += 1
                    self._rebalance()
            case Lookup(task_id=task_id):
                task = (self._running.get(task_id) or self._queued_tasks.get(task_id)
                        or self._history.get(task_id))
                reply.set(task.view() if task is not None else None)
            case RecordDelivery(task_id=task_id, delivery=delivery, final_status=final):
                task = self._history.get(task_id)
                if task is not None:
                    task.deliveries.append(delivery)
                    if final is not None:
                        task.webhook_status = final

    def _submit(self, task: Task) -> None:
        if task.id in self._queued_tasks or task.id in self._running:
            task.outcome.fail(Rejected(409, "DUPLICATE_TASK_ID", f"task {task.id} is already queued or running"))
            return
        if self.maintenance:
            task.outcome.fail(Rejected(503, "MAINTENANCE", "the worker is in maintenance mode"))
            return
        if len(self._queue) >= self.config.max_queue + self._free_slots():
            task.outcome.fail(Rejected(
                429, "QUEUE_FULL", f"worker {self.name}: queue full ({self.config.max_queue} waiting)",
                retry_after=1,
            ))
            return
        task.worker = self.name
        self._queued_tasks[task.id] = task
        self._queue.push(task, task.priority)
        self._rebalance()

    def _free_slots(self) -> int:
        return self.config.slots - self._busy()

    def _cancel(self, task_id: str) -> Reply | None:
        """Returns the task's outcome slot when the task was queued or running."""
        task = self._queued_tasks.pop(task_id, None)
        if task is not None:
            self._queue.remove(task)
            task.cancel_requested = True
            self._finish(task, "cancelled", error=TaskError(type="Cancelled", message="cancelled before it started"))
            return task.outcome
        task = self._running.get(task_id)
        if task is not None and task.scope is not None:
            task.cancel_requested = True
            task.scope.cancel()
            return task.outcome
        return None

    # -- slots -----------------------------------------------------------------------------
    async def _slot(self) -> None:
        done = 0
        while True:
            while not (self._queue and self._spare):
                await self._work.park()
            done += 1
            if done % YIELD_EVERY == 0:  # a slot fed only instant tasks must still let others run
                await trio.lowlevel.checkpoint()
                if not (self._queue and self._spare):
                    continue
            item = self._queue.pop()
            self._spare -= 1
            try:
                if isinstance(item, SlotHold):
                    item.granted.set()
                    self._rebalance()
                    await item.released.wait()
                else:
                    await self._execute(item)
            finally:
                self._spare += 1
                self._rebalance()

    async def _execute(self, task: Task) -> None:
        del self._queued_tasks[task.id]
        if trio.current_time() >= task.deadline:
            self._finish(task, "timed_out", error=TaskError(type="Timeout", message="timed out waiting in the queue"))
            return
        self._running[task.id] = task
        self._rebalance()
        try:
            await run_task(task, self.expose_tracebacks)
        finally:
            del self._running[task.id]
        self._record(task)

    def _finish(self, task: Task, status: str, *, error: TaskError | None = None) -> None:
        """A task that never ran (cancelled or timed out in the queue)."""
        settle(task, status, error=error)
        self._record(task)
        self._publish()

    def _record(self, task: Task) -> None:
        """Bookkeeping of a settled task: counters, history, its waiter, its webhook."""
        key = (task.spec.name, task.mode, task.status)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if task.duration_ms is not None:
            seconds = task.duration_ms / 1000.0
            self.duration_buckets[bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1
            self.duration_sum_s += seconds
        self._remember(task)
        task.outcome.set(task.result_body())
        if task.mode == "webhook" and self.on_finished is not None:
            self.on_finished(task)

    def _remember(self, task: Task) -> None:
        history = self._history
        history[task.id] = task
        if len(history) > self.keep_results:
            history.popitem(last=False)
        oldest = next(iter(history.values()))
        if oldest.finished_mono < task.finished_mono - self.keep_results_s:
            horizon = task.finished_mono - self.keep_results_s
            while history and next(iter(history.values())).finished_mono < horizon:
                history.popitem(last=False)


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


LEASE = object()  # a slot on offer; any object would do, one is enough


def settle(task: Task, status: str, *, result: Any = None, error: TaskError | None = None) -> None:
    task.status = status
    task.result = result
    task.error = error
    task.finished_at = time.time()
    task.finished_mono = trio.current_time()
    if task.items_send is not None:
        task.items_send.close()


async def run_task(task: Task, expose_tracebacks: bool) -> None:
    """Run the function within the task's deadline and settle the task with its outcome.

    Cancellation from outside (the caller's scope) propagates; the task is then not settled."""
    task.status = "running"
    task.started_at = time.time()
    task.started = time.perf_counter()
    status, result, error = "completed", None, None
    with trio.CancelScope(deadline=task.deadline) as scope:
        task.scope = scope
        try:
            result = await _call(task)
        except _ReaderGone:
            status, error = "cancelled", TaskError(type="Cancelled", message="the stream reader went away")
        except Exception as exc:
            status = "failed"
            error = TaskError(
                type=type(exc).__name__, message=str(exc) or type(exc).__name__,
                traceback=traceback.format_exc() if expose_tracebacks else None,
            )
    if scope.cancelled_caught:
        if task.cancel_requested:
            status, error = "cancelled", TaskError(type="Cancelled", message="cancelled while running")
        else:
            status, error = "timed_out", TaskError(type="Timeout", message="the function ran past its timeout")
    task.duration_ms = round((time.perf_counter() - task.started) * 1000, 3)
    settle(task, status, result=result, error=error)


async def run_leased(worker: WorkerActor, task: Task) -> TaskResult:
    """Run a sync task in the caller's own task on a slot leased from `worker.try_lease()`.

    The slot goes back with `Finished` whatever happens, also when the caller is cancelled."""
    task.worker = worker.name
    worker.tell_nowait(Started(task))  # best effort: only Lookup/Cancel visibility depends on it
    try:
        await run_task(task, worker.expose_tracebacks)
    finally:
        if not task.finished:  # the caller was cancelled (client gone)
            task.cancel_requested = True
            task.duration_ms = round((time.perf_counter() - task.started) * 1000, 3)
            settle(task, "cancelled", error=TaskError(type="Cancelled", message="the client went away"))
        message = Finished(task, reoffered=worker.give_back())
        if not worker.tell_nowait(message):
            with trio.CancelScope(shield=True):
                await worker.tell(message)
    return task.result_body()


async def run_sync(worker: WorkerActor, task: Task) -> TaskResult:
    """A sync task's outcome: on a leased slot when one is on offer, else through the queue.

    Raises `Rejected` (queue full, maintenance). A cancelled caller cancels its task."""
    if worker.try_lease() is not None:
        return await run_leased(worker, task)
    message = Submit(task)
    if not worker.tell_nowait(message):
        await worker.tell(message)
    try:
        return await task.outcome.wait()
    finally:
        if not task.outcome.done:  # the caller went away: free the queue place or the slot
            worker.tell_nowait(Cancel(task.id))


async def _call(task: Task) -> Any:
    spec = task.spec
    if spec.kind == "async":
        return await spec.fn(task.input)
    if spec.kind == "thread":
        return await trio.to_thread.run_sync(spec.fn, task.input, abandon_on_cancel=True)
    if spec.kind == "process":  # a timeout or cancel kills the worker process
        return await run_in_process(spec.fn, task.input)
    agen = spec.fn(task.input)
    try:
        if task.mode != "stream":  # a streaming function asked for one answer: all items
            return [item async for item in agen]
        # Items go out as they come; a full buffer pauses the generator.
        async with task.items_send as send:
            async for item in agen:
                await send.send(_encode(item))
        return None
    except trio.BrokenResourceError:
        raise _ReaderGone() from None
    finally:
        await agen.aclose()


class _ReaderGone(Exception):
    """A stream's reader went away."""
