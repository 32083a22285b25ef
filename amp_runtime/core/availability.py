"""Whether the store can answer, as its callers see it: the state behind a fast 503 and `/ready`.

Trio side only: the store's DB thread reports what it finds through `TrioToken.run_sync_soon`.
Logs one WARNING when the store goes away and one when it is back.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import trio
from .actor import Outage, Reply
from .http import ApiError

log = logging.getLogger("amp_runtime.store")


class StoreUnavailable(ApiError, Outage):
    """The store cannot answer now: it is unreachable, or the connection broke under this
    request's write. An ApiError so that any route answers it as a coded 503 with Retry-After."""

    def __init__(self, message: str):
        super().__init__(503, "STORE_UNAVAILABLE", message, headers={"Retry-After": "1"})


# What a write's caller is told when the connection broke under it (the store answers the truth).
LOST_WRITE = ("the store connection was lost while committing this change; it was not saved: "
              "retry (the store reconnects)")
LOST_IN_COMMIT = ("the store connection was lost while this change's COMMIT was on its way: it may have been "
                  "saved; check before retrying")
LOST_READ = "the store connection was lost and a read retried after reconnecting failed again: retry"
ABANDONED = ("the process stopped while the store had not answered this change: it may still be saved; "
             "check before retrying")


RECONNECT_MAX_DELAY_S = 2.0  # the store's reconnect backoff is capped here


def outage_silence_s(liveness_s: float, heartbeat_s: float) -> float:
    """How long after the store comes back another process's silence may still be the outage's:
    it reconnects (within the backoff's cap), then beats within a heartbeat, inside `liveness_s`."""
    return liveness_s + heartbeat_s + RECONNECT_MAX_DELAY_S


def unavailable_error(reason: str) -> StoreUnavailable:
    return StoreUnavailable(f"the store is unavailable ({reason}): retry later")


class Availability:
    """`reason` is None while the store answers. `pending` holds every ask awaiting its answer
    (reply -> message); `withdraw` answers those that `can_withdraw(message)` says never ran."""

    def __init__(self, describe: str, stall_s: float, can_withdraw: Callable[[Any], bool]):
        self.describe = describe
        self.stall_s = stall_s
        self.can_withdraw = can_withdraw
        self.pending: dict[Reply, Any] = {}
        self._down: str | None = None  # unreachable: why
        self._slow = False  # a transaction has been on the thread longer than `stall_s`
        self._since = 0.0
        self.stopping = False  # the store gave up waiting on its database: the process exits
        self._back_at = -math.inf  # when it last came back (monotonic): never away so far
        self._available = trio.Event()
        self._available.set()

    @property
    def reason(self) -> str | None:
        if self.stopping:
            return "the process is stopping"
        if self._down is not None:
            return self._down
        if self._slow:
            return f"no answer for over {self.stall_s:g}s"
        return None

    def available_for(self) -> float:
        """Seconds the store has answered since it last came back (0 while it is away)."""
        return 0.0 if self.reason is not None else time.monotonic() - self._back_at

    async def until_available(self) -> None:
        await self._available.wait()

    def _changed(self) -> None:
        if self.reason is None:
            self._available.set()
        elif self._available.is_set():
            self._available = trio.Event()

    def went_away(self, reason: str) -> None:
        if self.reason is None:
            log.warning("store %s unavailable (%s): requests that need it answer 503 until it is back",
                        self.describe, reason)
            self._since = time.monotonic()
        self._down = reason
        self._changed()
        self.withdraw(reason)

    def came_back(self) -> None:
        if self._down is not None:
            self._down = None
            self._slow = False  # the thread is answering again
            self._changed()
            self._log_back()

    def set_slow(self, slow: bool) -> None:
        if slow and self.reason is None:
            self._slow = True
            self._changed()
            self._since = time.monotonic()
            log.warning("store %s unavailable (no answer for over %gs): requests that need it answer 503",
                        self.describe, self.stall_s)
            self.withdraw(f"no answer for over {self.stall_s:g}s")
        elif not slow and self._slow:
            self._slow = False
            self._changed()
            if self._down is None:
                self._log_back()

    def _log_back(self) -> None:
        self._back_at = time.monotonic()
        log.warning("store %s available again after %.1fs", self.describe, time.monotonic() - self._since)

    def withdraw(self, reason: str) -> None:
        """Answer every ask that can still be answered without an effect (the store skips an
        answered ask, so it never runs)."""
        for reply, msg in list(self.pending.items()):
            if self.can_withdraw(msg):
                reply.fail(unavailable_error(reason))
