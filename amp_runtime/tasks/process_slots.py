"""Process slots: `run="process"` functions run in a pool of worker processes (trio-parallel).

CPU-bound Python in a thread holds the GIL, so one process uses one core; worker processes use
all of them. A timeout or a cancel kills the worker process running the task (SIGKILL, then it
is reaped) and frees its place in the pool at once; a replacement process starts in the
background (importing the function's module), so the next task need not wait for one. A
worker process that dies by itself (os._exit, a signal, a segfault) fails that task only.

The pool is a `trio_parallel` worker context owned by `ProcessSlots.run`, which the task
service starts in its nursery: when the runtime stops, the context closes and its idle worker
processes exit (or are killed after a short grace), so none outlives the runtime.

Functions travel to the worker by module and name (pickle), so they must be importable at the
top level of a module; inputs and results must pickle (JSON values do).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any, Callable

import trio
import trio_parallel

from .registry import preload

log = logging.getLogger("amp_runtime.tasks")

CLOSE_GRACE_S = 2.0  # idle worker processes get this long to exit at shutdown, then SIGKILL
IDLE_TIMEOUT_S = 600.0  # a worker process idle this long exits; the next call starts another

_HELD = contextlib.nullcontext()  # the caller already holds its place in the pool
_open_pools = trio.lowlevel.RunVar("amp_runtime_process_slots", default=())


class WorkerProcessDied(Exception):
    """The worker process running the task died before it answered."""


class ProcessPoolClosed(Exception):
    """No process pool is open: the runtime is stopping (or was never started)."""


class ProcessSlots:
    """The runtime's pool of worker processes; `size` run at once, the rest wait for a place.

    Not an actor: its state (the open worker context and the nursery replacements start in) is
    set and cleared by `run` alone; `call` reads it and never changes it. Supervised like an
    actor: a restart opens a new pool.
    """

    def __init__(self, size: int = 0):
        self.name = "process-slots"
        self.size = size or os.cpu_count() or 1
        self._context: Any = None
        self._limiter: trio.CapacityLimiter | None = None
        self._replacements: trio.Nursery | None = None
        self._replacing = trio.CapacityLimiter(self.size)  # at most `size` extra processes starting

    async def run(self) -> None:
        """Hold the pool open until cancelled; then close it and reap its processes."""
        self._limiter = trio.CapacityLimiter(self.size)
        try:
            # The nursery closes first (replacements starting are killed), then the context.
            async with trio_parallel.open_worker_context(
                idle_timeout=IDLE_TIMEOUT_S, grace_period=CLOSE_GRACE_S
            ) as context, trio.open_nursery() as replacements:
                self._context, self._replacements = context, replacements
                _open_pools.set((*_open_pools.get(), self))
                try:
                    await trio.sleep_forever()
                finally:
                    self._context = self._replacements = None
                    _open_pools.set(tuple(p for p in _open_pools.get() if p is not self))
        except trio_parallel.BrokenWorkerError as exc:
            # Raised on close when a worker would not exit within the grace and was killed.
            log.warning("process pool closed uncleanly: %s", exc.args[0] if exc.args else exc)

    def statistics(self) -> dict[str, int]:
        """Worker processes idle and running now (for tests and /metrics)."""
        if self._context is None:
            return {"size": self.size, "idle": 0, "running": 0}
        stats = self._context.statistics()
        return {"size": self.size, "idle": stats.idle_workers, "running": stats.running_workers}

    async def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """`fn(arg)` in a worker process. Cancelling the caller kills that process.

        Raises what `fn` raised, `WorkerProcessDied` if the process died, `ProcessPoolClosed`
        when the pool is not open."""
        context, limiter = self._context, self._limiter
        if context is None or limiter is None:
            raise ProcessPoolClosed("the process pool is closed (the runtime is stopping)")
        async with limiter:  # taken here, so a cancel while waiting for a place kills nothing
            try:
                return await context.run_sync(fn, arg, kill_on_cancel=True, limiter=_HELD)
            except trio.Cancelled:
                self._replace(fn)  # the process running fn was killed
                raise
            except trio_parallel.BrokenWorkerError as exc:
                self._replace(fn)
                raise WorkerProcessDied(_died(fn, exc)) from None
            except trio.ClosedResourceError:
                raise ProcessPoolClosed("the process pool is closed (the runtime is stopping)") from None

    def _replace(self, fn: Callable[..., Any]) -> None:
        """Start a worker process in the background, ready with fn's module imported."""
        nursery, context = self._replacements, self._context
        if nursery is None or context is None or nursery.cancel_scope.cancel_called:
            return
        nursery.start_soon(self._start_worker, context, getattr(fn, "__module__", None))

    async def _start_worker(self, context: Any, module: str | None) -> None:
        if self._replacing.borrowed_tokens >= self._replacing.total_tokens:
            return  # enough replacements on their way already
        try:
            await context.run_sync(preload, module, kill_on_cancel=True, limiter=self._replacing)
        except Exception as exc:  # a replacement that fails costs the next task a start, no more
            log.debug("process pool: a replacement worker did not start: %r", exc)


async def run_in_process(fn: Callable[[Any], Any], arg: Any) -> Any:
    """`fn(arg)` in the process pool of the runtime running in this trio run.

    One runtime per process is the rule; where tests run several in one trio run, the pool
    started last serves them all while it is open."""
    pools = _open_pools.get()
    if not pools:
        raise ProcessPoolClosed("no process pool is open (the runtime is stopping or not started)")
    return await pools[-1].call(fn, arg)


def _died(fn: Callable[..., Any], exc: BaseException) -> str:
    proc = exc.args[-1] if exc.args else None
    code = getattr(proc, "exitcode", None)
    if code is None:
        how = "without an exit code"
    elif code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    name = getattr(fn, "__qualname__", repr(fn))
    return f"the worker process running {name} died ({how}); the pool goes on with a new process"
