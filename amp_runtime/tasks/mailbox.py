"""A worker's mailbox messages: a closed set, each saying who sends it and why."""

from __future__ import annotations

from typing import Any

import msgspec


class Cancel(msgspec.Struct, tag=True):
    """Cancel a queued or running task (DELETE /tasks/{id}, a stream reader gone, or a caller
    whose task outlived its deadline, queued or running: `timed_out`). Answers the task's outcome
    slot (await it for the final state), or None."""

    task_id: str
    timed_out: bool = False


class Hold(msgspec.Struct, tag=True):
    """A job asks for a slot ahead of queued tasks."""

    hold: Any


class Unhold(msgspec.Struct, tag=True):
    """A job gives up its place (granted or not)."""

    hold: Any


class SetMaintenance(msgspec.Struct, tag=True):
    """Maintenance on: new tasks are refused; queued and running ones finish."""

    on: bool


class Lookup(msgspec.Struct, tag=True):
    """The task record with this id as a `TaskView`, or None (kept for a bounded time and count)."""

    task_id: str


class RecordDelivery(msgspec.Struct, tag=True):
    """The webhook sender reports one delivery attempt."""

    task_id: str
    delivery: Any
    final_status: str | None = None
