"""What a durable worker instance is told (its mailbox), how its calls end, and what it needs
from the service. Messages are plain structs; the instance (`instance.py`) alone acts on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import msgspec

from ..core.store import Store


# -- the mailbox ---------------------------------------------------------------------------
class Invoke(msgspec.Struct, tag=True):
    """Routes -> instance: run `function`. With `wait`, the reply is the `Outcome`; without,
    the reply comes once the invocation is persisted. A known `key` is answered from its record."""

    function: str
    params: list[Any]
    key: str | None = None
    convention: str = "component"
    wait: bool = True


class NewKey(msgspec.Struct, tag=True):
    """Routes -> instance: issue and persist an invocation key."""


class Complete(msgspec.Struct, tag=True):
    """Routes -> instance: complete the promise `idx`; replies True, False (already), or 404."""

    idx: int
    data: list[int]


class Interrupt(msgspec.Struct, tag=True):
    """Routes -> instance: cancel the running invocation; `recover` re-runs it at once."""

    recover: bool = False


class Describe(msgspec.Struct, tag=True):
    """Routes -> instance: the current status and retry count."""


class Remove(msgspec.Struct, tag=True):
    """Service -> instance: interrupt, delete every record, stop."""


class StopAccepting(msgspec.Struct, tag=True):
    """Service -> instance at shutdown: start nothing new; fail waiters of unstarted work.
    `handed_over`: peers, where another peer takes the worker over (503) rather than a restart."""

    handed_over: bool = False


class Settle(msgspec.Struct, tag=True):
    """Service -> instance before it gives the instance up (after `StopAccepting`): replies once
    no invocation is running (one awaiting a promise counts as settled: it re-runs elsewhere)."""


class Release(msgspec.Struct, tag=True):
    """Service -> instance: another peer runs it from now on (this one drains or lost the lease).
    Cancels what runs (its result was not recorded: the new owner re-runs it), fails the waiting
    callers with 503 and stops. Nothing is deleted."""


@dataclass(slots=True)
class Outcome:
    """How an invocation ended: `ok` with the JSON result list, or the error text."""

    ok: bool
    payload: bytes  # JSON result list when ok, else the error message (UTF-8)


@dataclass(slots=True)
class InstanceEnv:
    """What an instance needs from the service."""

    store: Store
    max_retries: int
    retry_delay_s: float
    count: Callable[[str], None]  # metrics: invocation outcomes
    lease_owner: str | None = None  # peers: every write checks this peer still holds the lease


def worker_key(template_id: str, name: str) -> str:
    return f"{template_id}.{name}"
