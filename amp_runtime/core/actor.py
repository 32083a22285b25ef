"""The actor core: a bounded mailbox, `ask`/`tell`, and a supervisor with a restart budget.

An actor owns its state; the only way in is its mailbox. `ask` sends a message with a reply
slot and waits for the answer; `tell` sends and forgets. Replies travel through a small slot
object with a `trio.Event` rather than a fresh channel per call (measured ~2x faster).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import trio

from .logs import actor_name

log = logging.getLogger("amp_runtime.actor")
YIELD_EVERY = 64


class Outage(Exception):
    """Marks an expected, passing condition (the store is away): the store logs it once when it
    starts and once when it ends, so callers log it in one line without a traceback, or not at all."""


def is_outage(exc: BaseException) -> bool:
    """`exc` is an `Outage`, or a group of nothing else (a nursery's)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_outage(inner) for inner in exc.exceptions)
    return isinstance(exc, Outage)


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """`message` with a traceback; for an outage one debug line (the store has said it already)."""
    if is_outage(exc):
        logger.debug(message + " (%s)", *args, exc)
    else:
        logger.error(message, *args, exc_info=exc)


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside a (nested) group: what a log line should name."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


OUTAGE_RESTART_DELAYS_S = (0.25, 0.5, 1.0, 2.0)  # an actor that needs the store waits for it, capped


class ActorUnavailable(Exception):
    """The actor's mailbox is closed: it stopped and will not answer."""


class Reply:
    """Where an actor puts the answer to one `ask`. Set exactly once."""

    __slots__ = ("_event", "_value", "_error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def settled(self) -> None:
        """Until the reply is set or failed, without raising the failure."""
        await self._event.wait()

    async def wait(self) -> Any:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Actor:
    """Base class. Subclasses implement `handle(msg, reply)`; `reply` is None for a `tell`.

    `on_start` runs before the first message (and again after a restart), so an actor can
    rebuild its state from the store. `run` returns when the mailbox is closed. A message that
    raises fails its own `ask` and crashes the actor (see `supervise` for what a restart needs).
    """

    def __init__(self, name: str, *, mailbox_size: int = 1024, ask_timeout: float = 30.0):
        self.name = name
        self.ask_timeout = ask_timeout
        self._send, self._recv = trio.open_memory_channel[tuple[Any, Reply | None]](mailbox_size)

    async def ask(self, msg: Any, *, timeout: float | None = None) -> Any:
        """Send `msg` and wait for the reply; the actor's exception is re-raised here.

        Raises `trio.TooSlowError` after `timeout` (default: the actor's `ask_timeout`).
        """
        reply = Reply()
        with trio.fail_after(self.ask_timeout if timeout is None else timeout):
            try:
                await self._send.send((msg, reply))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ActorUnavailable(f"actor {self.name} is stopped") from None
            return await reply.wait()

    async def tell(self, msg: Any) -> None:
        try:
            await self._send.send((msg, None))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorUnavailable(f"actor {self.name} is stopped") from None

    def tell_nowait(self, msg: Any) -> bool:
        """Best effort: False when the mailbox is full or closed."""
        try:
            self._send.send_nowait((msg, None))
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False

    def close(self) -> None:
        """Stop accepting messages; `run` finishes what is queued and returns."""
        self._send.close()

    async def on_start(self) -> None:
        pass

    async def handle(self, msg: Any, reply: Reply | None) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        token = actor_name.set(self.name)
        recv = self._recv
        handled = 0
        try:
            await self.on_start()
            while True:
                # Take waiting messages without a trip through the scheduler; yield now and then
                # so a busy actor cannot starve the others.
                try:
                    msg, reply = recv.receive_nowait()
                    handled += 1
                    if handled % YIELD_EVERY == 0:
                        await trio.lowlevel.checkpoint()
                except trio.WouldBlock:
                    try:
                        msg, reply = await recv.receive()
                    except trio.EndOfChannel:
                        return
                except trio.EndOfChannel:
                    return
                try:
                    await self.handle(msg, reply)
                except Exception as exc:
                    # The asker learns about it; the actor itself still crashes (and is restarted).
                    if reply is not None:
                        reply.fail(exc)
                    raise
        finally:
            actor_name.reset(token)


class RestartBudgetExceeded(Exception):
    """An actor crashed more often than its budget allows; the process should fail loudly."""


async def supervise(
    actor: Actor,
    *,
    max_restarts_per_minute: int = 5,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `actor.run()`; log the crash once with its cause and run it again, within a budget.

    A restart calls `run` on the same object, so an actor supervised here must rebuild in `run`
    (from the store in `on_start`, or from nothing) and settle, before its `run` raises, every
    caller it owed an answer: never carry half-changed state into the next run (the worker actor
    closes its books and starts a new generation; the webhook sender restarts what it owes).
    Returns when the actor returns normally (mailbox closed). Cancellation passes through.
    """
    crashes: deque[float] = deque()
    outages = 0
    task_status.started()
    while True:
        started = time.monotonic()
        try:
            await actor.run()
            return
        except Exception as exc:
            if time.monotonic() - started > OUTAGE_RESTART_DELAYS_S[-1]:
                outages = 0  # it ran a while since: a new outage starts at the short delay
            if is_outage(exc):
                # Not a crash: the store is away. Not counted against the budget (an outage may
                # last long); restarted with backoff so it rebuilds once the store is back.
                if outages == 0:
                    log.info("actor %s stopped: %s; restarting when the store answers", actor.name, _leaf(exc))
                await trio.sleep(OUTAGE_RESTART_DELAYS_S[min(outages, len(OUTAGE_RESTART_DELAYS_S) - 1)])
                outages += 1
                continue
            outages = 0
            now = time.monotonic()
            crashes.append(now)
            while crashes and now - crashes[0] > 60.0:
                crashes.popleft()
            log.exception("actor %s crashed (%d in the last minute)", actor.name, len(crashes))
            if len(crashes) > max_restarts_per_minute:
                raise RestartBudgetExceeded(
                    f"actor {actor.name} crashed {len(crashes)} times in a minute; giving up"
                ) from None
            log.warning("restarting actor %s", actor.name)
