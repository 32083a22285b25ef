"""An admitted stream task as its reader sees it: items, then the outcome, and one way to give
the stream back (`close`, in the reader's `finally`)."""

from __future__ import annotations

from typing import Any, AsyncIterator

import msgspec
import trio

from .errors import WorkerFailed
from .models import TaskError, TaskResult
from .running import SETTLE_GRACE_S, wait_outcome
from .task import Task

_encode = msgspec.json.Encoder().encode


class StreamHandle:
    """An admitted stream task: its items, then its outcome. `close()` (in the reader's
    `finally`) gives back the stream's place in `[http] max_open_streams` and cancels the task
    if it is still going (the reader left)."""

    __slots__ = ("task", "_service", "_open")

    def __init__(self, service: Any, task: Task):
        self.task = task
        self._service = service
        self._open = True

    @property
    def id(self) -> str:
        return self.task.id

    async def events(self) -> AsyncIterator[tuple[bytes | None, bytes]]:
        """(None, item) per item, then (b"end" | b"error", encoded outcome).

        Bounded: once running, the task's own deadline ends it (and a failing worker settles it);
        while it waits in the queue, the wait is bounded by its deadline plus a grace."""
        task = self.task
        items = task.items_recv
        while True:
            if task.status == "queued":
                with trio.move_on_at(task.deadline + SETTLE_GRACE_S) as waited:  # never around a yield
                    try:
                        item = await items.receive()
                    except trio.EndOfChannel:
                        break
                if waited.cancelled_caught:
                    yield b"error", _encode(_unanswered(task))
                    return
            else:
                try:
                    item = await items.receive()
                except trio.EndOfChannel:
                    break
            yield None, item
        try:
            result = await wait_outcome(self._service.workers[task.worker], task)
        except WorkerFailed:
            result = _unanswered(task)
        yield (b"end" if result.status == "completed" else b"error"), _encode(result)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._service._stream_closed()
            self.task.items_recv.close()
            if not self.task.outcome.done:  # the reader left: cancel the task, free its slot now
                self._service.cancel_nowait(self.task)


def _unanswered(task: Task) -> TaskResult:
    return TaskResult(id=task.id, status="failed", success=False, error=TaskError(
        type="WorkerFailed", message=f"worker {task.worker} did not answer in time"))
