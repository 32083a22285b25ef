"""Process slots: `run="process"` functions run in a pool of worker processes (trio-parallel).

CPU-bound Python in a thread holds the GIL, so one process uses one core; worker processes use
all of them. A timeout or a cancel kills the worker process running the task (SIGKILL, then it
is reaped) and frees its place in the pool at once; the next call starts a fresh process. A
worker process that dies by itself (os._exit, a signal, a segfault) fails that task only.

The pool is a `trio_parallel` worker context owned by `ProcessSlots.run`, which the task
service starts in its nursery: when the runtime stops, the context closes and its idle worker
processes exit (or are killed after a short grace), so none outlives the runtime.

Functions travel to the worker by module and name (pickle), so they must be importable at the
top level of a module; inputs and results must pickle (JSON values do).
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Callable

import trio
import trio_parallel

log = logging.getLogger("amp_runtime.tasks")

CLOSE_GRACE_S = 2.0  # idle worker processes get this long to exit at shutdown, then SIGKILL
IDLE_TIMEOUT_S = 600.0  # a worker process idle this long exits; the next call starts another

_open_pools = trio.lowlevel.RunVar("amp_runtime_process_slots", default=())


class WorkerProcessDied(Exception):
    """The worker process running the task died before it answered."""


class ProcessPoolClosed(Exception):
    """No process pool is open: the runtime is stopping (or was never started)."""


class ProcessSlots:
    """The runtime's pool of worker processes; `size` run at once, the rest wait for a place.

    Not an actor: its only state, the open worker context, is set and cleared by `run` alone;
    `call` reads it and never changes it. Supervised like an actor: a restart opens a new pool.
    """

    def __init__(self, size: int = 0):
        self.name = "process-slots"
        self.size = size or os.cpu_count() or 1
        self._context: Any = None
        self._limiter: trio.CapacityLimiter | None = None

    async def run(self) -> None:
        """Hold the pool open until cancelled; then close it and reap its processes."""
        self._limiter = trio.CapacityLimiter(self.size)
        try:
            async with trio_parallel.open_worker_context(
                idle_timeout=IDLE_TIMEOUT_S, grace_period=CLOSE_GRACE_S
            ) as context:
                self._context = context
                _open_pools.set((*_open_pools.get(), self))
                try:
                    await trio.sleep_forever()
                finally:
                    self._context = None
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
        try:
            return await context.run_sync(fn, arg, kill_on_cancel=True, limiter=limiter)
        except trio_parallel.BrokenWorkerError as exc:
            raise WorkerProcessDied(_died(fn, exc)) from None
        except trio.ClosedResourceError:
            raise ProcessPoolClosed("the process pool is closed (the runtime is stopping)") from None


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
