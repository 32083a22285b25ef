"""Why the task family refused or could not finish a task; the route turns these into answers."""

from __future__ import annotations

from ..core.contain import is_cancellation
from ..core.words import exception_name, exception_text


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


def describe(exc: BaseException | None) -> str:
    """The first real cause inside `exc` (skipping exception groups and cancellations)."""
    if isinstance(exc, BaseExceptionGroup):
        causes = [e for e in exc.exceptions if not is_cancellation(e)]
        return describe(causes[0] if causes else exc.exceptions[0])
    if isinstance(exc, WorkerFailed) and exc.__cause__ is not None:
        return describe(exc.__cause__)
    return f"{exception_name(exc)}: {exception_text(exc)}" if exc is not None else "unknown cause"
