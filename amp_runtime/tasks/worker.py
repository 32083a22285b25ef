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

Beside it: `task.py` (the records: tasks, outcomes, leases, slot holds), `running.py` (how a
function runs on a slot and settles its task), `history.py` (the settled records kept for
lookups, passive state of this actor), `mailbox.py` (its messages).

Failure: when any of this code raises, the worker fails as a whole. Every task and job hold it
owes an answer is settled with the cause (a `WorkerFailed` error), the supervisor logs it once
and starts the worker again from nothing: an empty queue, every slot free, a new generation
(leases lent before are then ignored when they come back).
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from typing import Any

import msgspec
import trio

from ..config import WorkerConfig
from ..core.actor import Actor, Reply
from ..core.contain import is_cancellation
from . import running
from .errors import Rejected, WorkerFailed, describe
from .history import History
from .mailbox import Cancel, Hold, Lookup, RecordDelivery, SetMaintenance, Unhold
from .models import SlotState, TaskError, TaskResult
from .queue import PriorityQueue
from .registry import FunctionSpec
from .running import SETTLE_GRACE_S, ResultNotJSON, run_leased, run_sync, wait_outcome
from .task import Lease, Outcome, SlotHold, Task, new_task_id, new_task_ids, not_json_error, settle, settled_record

__all__ = ["Rejected", "WorkerFailed", "Task", "new_task_id", "new_task_ids", "Lease", "SlotHold", "WorkerActor",
           "run_sync", "run_leased", "wait_outcome", "Cancel", "Hold", "Unhold", "Lookup", "RecordDelivery",
           "SetMaintenance", "SETTLE_GRACE_S", "ResultNotJSON", "DURATION_BUCKETS_S"]

log = logging.getLogger("amp_runtime.tasks")
_encode = msgspec.json.Encoder().encode
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
RUN_AHEAD = 32  # queued tasks a slot runs in a row before a checkpoint: 8 -> 32 was ~5% more batch tasks/s (128: none more)


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
        self._history = History(keep_results, keep_results_s)  # settled tasks, for lookups
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
        return self._history.newest_ids(limit)

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
            raise WorkerFailed(f"worker {self.name} failed: {describe(exc)}") from exc

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
        SystemExit included, fails its task (`running.call_now`)."""
        self._check_open()
        if self._busy >= self.config.slots:
            return None
        started_at = time.time()
        try:
            status, result, error, duration_ms = running.call_now(spec.fn, task_input, self.expose_tracebacks, task_id)
        except Exception as exc:  # our code around the function broke, not the function (as `_broke` says)
            log.exception("task %s on worker %s: running it failed", task_id, self.name, extra={"task_id": task_id})
            status, result, duration_ms = "failed", None, None
            error = TaskError(type="WorkerFailed", message=f"running the task failed: {describe(exc)}")
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
                status, result, error = "failed", None, not_json_error(exc)
                record = settled_record(finished_mono, task_id, function, "sync", self.name, status, priority,
                                        started_at, started_at, finished_at, duration_ms, result, error, webhook_url)
            self._history.keep(task_id, record, finished_mono)
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
        raise WorkerFailed(f"worker {self.name} failed: {describe(self._failure)}") from self._failure

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
                settled = self._history.lookup(task_id) if task is None else None
                answer = task.view() if task is not None else settled.view() if settled is not None else None
            case RecordDelivery(task_id=task_id, delivery=delivery, final_status=final):
                self._history.add_delivery(task_id, delivery, final)
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
            raise WorkerFailed(f"worker {self.name} failed: {describe(exc)}") from exc

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
                await running.run_task(task, self)
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
            task.status, task.result, task.error = "failed", None, not_json_error(exc)
            record = task.record()
        self._history.keep(task.id, record, task.finished_mono)

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
        reason = f"worker {self.name} stopped" if stopped else f"worker {self.name} failed: {describe(cause)}"
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
