"""A PostgreSQL LISTEN on its own connection and thread, turned into trio wake-ups.

The listener only wakes its owner: a notification says "look at the table", never what
changed, and notifications are lost while the connection is down, so the owner also polls
and every (re)connect wakes it once. Structured: `run` lives in its owner's nursery; when it
is cancelled the thread sees its stop flag within `POLL_S` and closes its connection.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import trio

from .secrets import masked_url

log = logging.getLogger("amp_runtime.notify")

POLL_S = 0.5  # how long the thread blocks on the socket before checking its stop flag
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0
CONNECT_TIMEOUT_S = 5


class Wakeup:
    """A level-triggered wake-up flag shared by the listener's callbacks and one waiter.

    Its methods never await except `wait`, so `set` is atomic between checkpoints."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Until set or `timeout_s`; clears the flag. True when it was set."""
        with trio.move_on_after(timeout_s):
            await self._event.wait()
        woken = self._event.is_set()
        if woken:
            self._event = trio.Event()
        return woken


class Listener:
    """LISTEN on `channel` at `url`; calls `on_wake()` in trio for each notification batch."""

    def __init__(self, url: str, channel: str, on_wake: Callable[[], None],
                 application_name: str = "amp-runtime-listen"):
        self.url = url
        self.channel = channel
        self.on_wake = on_wake
        self.application_name = application_name  # tells the listeners apart in pg_stat_activity

    async def run(self) -> None:
        stop = threading.Event()
        token = trio.lowlevel.current_trio_token()
        try:
            # Abandoned on cancel: the thread ends by itself within POLL_S once `stop` is set.
            await trio.to_thread.run_sync(self._listen, stop, token, abandon_on_cancel=True)
        finally:
            stop.set()

    def _wake(self, token: trio.lowlevel.TrioToken) -> None:
        try:
            token.run_sync_soon(self.on_wake)
        except trio.RunFinishedError:
            pass

    def _listen(self, stop: threading.Event, token: trio.lowlevel.TrioToken) -> None:
        import psycopg  # loaded only on a PostgreSQL store

        delay = RETRY_MIN_S
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                     application_name=self.application_name) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    delay = RETRY_MIN_S
                    self._wake(token)  # whatever was sent while we were not listening
                    while not stop.is_set():
                        if any(True for _ in conn.notifies(timeout=POLL_S)):
                            self._wake(token)
            except psycopg.Error as exc:
                # The store's own outage line is the warning; retries of a listener are detail.
                log.log(logging.INFO if delay == RETRY_MIN_S else logging.DEBUG,
                        "listen %s on %s failed (%s); retrying in %.1fs", self.channel,
                        masked_url(self.url), str(exc).strip().splitlines()[0] if str(exc).strip() else
                        type(exc).__name__, delay)
                stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
