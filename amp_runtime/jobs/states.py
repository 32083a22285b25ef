"""The job state machine: one table of legal transitions and one function that applies it.

    Scheduled -> Running -> Completed | Failed
    stop:  Scheduled -> StopRequested -> Stopped
           Running   -> StopRequested -> Stopping -> Stopped

Anything not in `TRANSITIONS` is impossible: `apply` raises `IllegalTransition`. A stop request
on a job that is already stopping or terminal is a no-op (`apply` returns the same status), so
`PUT /jobs/{id}/stop` is idempotent. `Failed` is also reachable from `Scheduled` (no worker left
to run it) and from `Stopping` (the extractor raised while winding down).
"""

from __future__ import annotations

from enum import Enum

SCHEDULED = "Scheduled"
RUNNING = "Running"
COMPLETED = "Completed"
STOPPED = "Stopped"
STOP_REQUESTED = "StopRequested"
STOPPING = "Stopping"
FAILED = "Failed"

STATUSES: tuple[str, ...] = (SCHEDULED, RUNNING, COMPLETED, STOPPED, STOP_REQUESTED, STOPPING, FAILED)
TERMINAL: frozenset[str] = frozenset({COMPLETED, STOPPED, FAILED})
ACTIVE: frozenset[str] = frozenset(STATUSES) - TERMINAL


class Event(str, Enum):
    """What can happen to a job."""

    START = "start"  # the runner holds a slot and begins extracting
    COMPLETE = "complete"  # the extractor reached end_block
    FAIL = "fail"  # the extractor raised, or no worker is left to run the job
    REQUEST_STOP = "request_stop"  # PUT /jobs/{id}/stop
    BEGIN_STOPPING = "begin_stopping"  # the running extractor noticed the stop request
    FINISH_STOPPING = "finish_stopping"  # nothing left running: the job is Stopped


class IllegalTransition(Exception):
    def __init__(self, status: str, event: Event):
        super().__init__(f"a {status} job cannot {event.value.replace('_', ' ')}")
        self.status = status
        self.event = event


TRANSITIONS: dict[tuple[str, Event], str] = {
    (SCHEDULED, Event.START): RUNNING,
    (RUNNING, Event.COMPLETE): COMPLETED,
    (SCHEDULED, Event.FAIL): FAILED,
    (RUNNING, Event.FAIL): FAILED,
    (STOPPING, Event.FAIL): FAILED,
    (SCHEDULED, Event.REQUEST_STOP): STOP_REQUESTED,
    (RUNNING, Event.REQUEST_STOP): STOP_REQUESTED,
    # Idempotent stop: already on the way out, or already terminal -> no change.
    (STOP_REQUESTED, Event.REQUEST_STOP): STOP_REQUESTED,
    (STOPPING, Event.REQUEST_STOP): STOPPING,
    (COMPLETED, Event.REQUEST_STOP): COMPLETED,
    (STOPPED, Event.REQUEST_STOP): STOPPED,
    (FAILED, Event.REQUEST_STOP): FAILED,
    (STOP_REQUESTED, Event.BEGIN_STOPPING): STOPPING,
    (STOP_REQUESTED, Event.FINISH_STOPPING): STOPPED,  # it never ran (or its runner is gone)
    (STOPPING, Event.FINISH_STOPPING): STOPPED,
}


def apply(status: str, event: Event) -> str:
    """The status after `event`; raises `IllegalTransition` when the table has no entry."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransition(status, event) from None


def is_terminal(status: str) -> bool:
    return status in TERMINAL


_BY_LOWER = {status.lower(): status for status in STATUSES} | {"stop_requested": STOP_REQUESTED}


def parse_status_filter(text: str | None) -> frozenset[str]:
    """`active` (default) = non-terminal, `all`, or a comma list of statuses, any case.

    Raises ValueError naming the unknown words.
    """
    if text is None:
        return ACTIVE
    words = [word.strip().lower() for word in text.split(",")]
    if words == ["active"]:
        return ACTIVE
    if words == ["all"]:
        return frozenset(STATUSES)
    unknown = [word for word in words if word not in _BY_LOWER]
    if unknown or not words:
        shown = ", ".join(repr(word) for word in unknown) or "''"
        raise ValueError(
            f"unknown status {shown}: use active, all, or a comma list of {', '.join(STATUSES)}"
        )
    return frozenset(_BY_LOWER[word] for word in words)


BULK_DELETE_FILTERS: dict[str, frozenset[str]] = {
    "terminal": TERMINAL,
    "completed": frozenset({COMPLETED}),
    "stopped": frozenset({STOPPED}),
    "error": frozenset({FAILED}),
}
