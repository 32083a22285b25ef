"""What a call can end with besides its result: one class per way, all under `AmpError`."""

from __future__ import annotations


class AmpError(Exception):
    """Base of every error the client raises for an answer of the server."""


class TaskFailed(AmpError):
    """The function raised (or its worker failed): `.type` and `.message` are the task's error."""

    def __init__(self, type: str, message: str, *, task_id: str | None = None, traceback: str | None = None):
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.task_id = task_id
        self.traceback = traceback


class TaskTimedOut(TaskFailed):
    """The task ran past its timeout, or waited past it in the queue."""


class TaskCancelled(TaskFailed):
    """The task was cancelled (`cancel()`, `DELETE /tasks/{id}`) before it finished."""


class Rejected(AmpError):
    """The server refused the request (400, 404, 409, 413, 422, ...): `.problems` lists why."""

    def __init__(self, status: int, code: str, problems: list[str]):
        super().__init__(f"{status} {code}: " + "; ".join(problems))
        self.status = status
        self.code = code
        self.problems = problems


class Unavailable(AmpError):
    """The server could not take the request now (429, 503) and retries ran out, or it could not
    be reached: `.status` is None for a connection that failed."""

    def __init__(self, status: int | None, code: str, message: str, *, retry_after: float | None = None):
        super().__init__(f"{status or 'no answer'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
