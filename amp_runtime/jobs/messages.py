"""The jobs scheduler's mailbox: who sends each message and why."""

from __future__ import annotations

import msgspec


class Create(msgspec.Struct, tag=True):
    """From the service (POST /jobs): `candidates` are the live local workers, best first."""

    dataset: str
    start_block: int
    end_block: int | None
    node_id: str | None
    candidates: list[str]


class Stop(msgspec.Struct, tag=True):
    """From the service (PUT /jobs/{id}/stop). Replies with the record, or None if absent."""

    job_id: int


class Started(msgspec.Struct, tag=True):
    """From a runner holding its slot: may it run? (Scheduled -> Running)."""

    job_id: int
    attempt: int


class Stopping(msgspec.Struct, tag=True):
    """From a runner that saw the stop request (StopRequested -> Stopping)."""

    job_id: int
    attempt: int


class Finished(msgspec.Struct, tag=True):
    """From a runner at its end: outcome is "complete", "stopped" or "fail" (with error)."""

    job_id: int
    attempt: int
    outcome: str
    error: str | None = None


class WorkersAlive(msgspec.Struct, tag=True):
    """From the worker watch loop: who is live now (`candidates`: live workers that can hold
    a job)."""

    live: list[str]
    candidates: list[str]
    now: float  # trio clock


class Suspend(msgspec.Struct, tag=True):
    """From the service when the process drains: pause every runner and start no more (jobs
    keep their status and resume at the next start). Replies with the done events of every
    runner paused so far, to be awaited outside the actor. Idempotent."""


class HandOver(msgspec.Struct, tag=True):
    """From the service at the end of a drain on a shared store (peers only): move every job of
    this process, paused by `Suspend`, to the least loaded of `candidates` (live workers of
    other peers) and wake them. Replies with the ids of the jobs handed over."""

    candidates: list[str]
