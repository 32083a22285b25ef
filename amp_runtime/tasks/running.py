"""How a task's function runs on a slot: within its deadline, settled whatever it raises, in the
caller's own task on a lent slot (`run_leased`) or awaited through the queue (`wait_outcome`).

Whatever the function raises, `BaseException` included, settles its task; only trio's own
cancellation goes on (`core.contain`). A thread function's thread, abandoned by a task that
stopped waiting, keeps its slot until it returns (`_in_thread`)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Protocol

import msgspec
import trio

from ..core.contain import is_our_cancellation
from ..core.logs import task_id_var
from ..core.words import exception_name, exception_text
from .errors import WorkerFailed, describe
from .mailbox import Cancel
from .models import TaskError, TaskResult
from .process_slots import run_in_process
from .task import Lease, Task, settle

log = logging.getLogger("amp_runtime.tasks")
_encode = msgspec.json.Encoder().encode
SETTLE_GRACE_S = 5.0  # past a task's deadline, how long a caller waits for its worker to answer


class WorkerActor(Protocol):
    """What running a task needs of its worker (`worker.WorkerActor`)."""

    name: str
    expose_tracebacks: bool

    def admit(self, task: Task, *, lease: bool = False) -> Lease | None: ...

    def release(self, lease: Lease) -> None: ...

    def tell_nowait(self, msg: Any) -> None: ...

    def thread_abandoned(self) -> None: ...

    def thread_returned(self) -> None: ...


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
    status, result, error, task.duration_ms = call_now(task.spec.fn, task.input, expose_tracebacks, task.id)
    settle(task, status, result=result, error=error)


def call_now(fn: Any, task_input: Any, expose_tracebacks: bool,
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
        if is_our_cancellation(exc):
            raise
        return "failed", None, _function_error(exc, worker.expose_tracebacks)
    finally:
        task_id_var.reset(logged_as)


def _function_error(exc: BaseException, expose_tracebacks: bool) -> TaskError:
    name = exception_name(exc)
    return TaskError(type=name, message=exception_text(exc) or name,
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
    settle(task, "failed", error=TaskError(type="WorkerFailed", message=f"running the task failed: {describe(exc)}"))


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
