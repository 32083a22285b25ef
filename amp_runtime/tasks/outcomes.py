"""What admission answers besides a stream: shared by the service and the batch runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import TaskResult

OUTCOME_STATUS = {"completed": 200, "failed": 500, "timed_out": 504, "cancelled": 409}  # a sync task's HTTP status


@dataclass(slots=True)
class SyncOutcome:
    """A sync task's result; `status` is the HTTP status of its outcome."""

    status: int
    result: TaskResult


@dataclass(slots=True)
class Forwarded:
    """A node of the cluster answered; the response goes back as it is."""

    response: Any
