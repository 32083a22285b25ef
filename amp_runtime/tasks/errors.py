"""Why the task family refused or could not finish a task; the route turns these into answers."""

from __future__ import annotations


class Rejected(Exception):
    """Admission refused a task; `status` and `code` say how to answer, `problems` lists each
    problem of a 400."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None,
                 problems: list[str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.problems = problems or [message]


class WorkerFailed(Exception):
    """A worker's own code failed; the tasks it held are settled with this cause."""
