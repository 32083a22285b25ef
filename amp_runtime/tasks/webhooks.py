"""Webhook delivery: POST a finished task's outcome to its URL, retrying with backoff + jitter.

The sender is an actor with one shared HTTP client; each delivery runs in its nursery, bounded
by a limiter. Every attempt is reported back to the task's worker, which owns the record.
Redirects are not followed; URLs resolving to private, loopback or link-local addresses are
refused unless `[webhook] allow_private` (checked at submission and again before each attempt).

A failure is contained to its delivery: whatever one attempt raises is recorded as that attempt's
error and retried like a refused one. If the sender itself fails, its restart starts again every
delivery it still owes (it keeps them until they end), from the attempt that was cut short.

Delivery is at-least-once: every POST carries `X-Amp-Task-Id` and `X-Amp-Delivery-Attempt`
(1, 2, ... per task, never reused, also across restarts) so receivers can deduplicate. With a
journal, the outcome is persisted before the first attempt and every later attempt before it goes
out and once answered, so a restart resumes what is owed (see `journal.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import random
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from ..config import WebhookConfig
from ..core.actor import Actor, Reply, log_failure
from ..core.availability import StoreUnavailable
from ..core.clock import rfc3339, utcnow
from ..core.logs import log_ids
from ..core.secrets import mask_urls_in, masked_url
from .models import Delivery, TaskError, TaskResult

log = logging.getLogger("amp_runtime.webhooks")
_encode = msgspec.json.Encoder().encode
MAX_CONCURRENT_DELIVERIES = 64


class UnsafeTarget(Exception):
    pass


MAX_URL_LENGTH = 2048


def url_problems(url: str) -> list[str]:
    """Syntax only: length, characters, scheme, host and port."""
    shown = repr(masked_url(url[:256]))
    if len(url) > MAX_URL_LENGTH:
        return [f"webhook.url: longer than {MAX_URL_LENGTH} characters"]
    if not url.isascii() or not url.isprintable() or " " in url:
        return [f"webhook.url: only printable ASCII without spaces (percent-encode the rest, "
                f"punycode for hosts), got {shown}"]
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port out of range or not a number
    except ValueError as exc:
        return [f"webhook.url: {exc}: {shown}"]
    if parts.scheme not in ("http", "https"):
        return [f"webhook.url must be an http or https URL, got {shown}"]
    if not parts.hostname:
        return [f"webhook.url has no host: {shown}"]
    return []


SENDER_OWNED = frozenset({"x-amp-delivery-attempt", "x-amp-signature"})  # a request's own are dropped


def signature(key: str, payload: bytes, now: float) -> bytes:
    """`X-Amp-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>` (the Stripe
    scheme): a receiver holding the key checks the body is ours and recent (README)."""
    timestamp = b"%d" % int(now)
    mac = hmac.new(key.encode(), timestamp + b"." + payload, hashlib.sha256).hexdigest()
    return b"t=" + timestamp + b",v1=" + mac.encode("ascii")


def _error_text(exc: BaseException) -> str:
    """An attempt's error as answered by `GET /tasks/{id}`: without the URL's password."""
    return mask_urls_in(f"{type(exc).__name__}: {exc}")


def merged_headers(*layers: dict[str, str]) -> dict[str, str]:
    """Later layers override earlier ones whatever the case of the name (HTTP names are
    case-insensitive): a request's `authorization` replaces the configured `Authorization`."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


async def check_target(url: str, allow_private: bool) -> None:
    """Raise `UnsafeTarget` when the URL's host resolves to a non-public address."""
    if allow_private:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await trio.socket.getaddrinfo(parts.hostname, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeTarget(f"webhook host {parts.hostname!r} does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise UnsafeTarget(
                f"webhook host {parts.hostname!r} resolves to non-public address {address} "
                "(set [webhook] allow_private = true to allow it)"
            )


class Deliver(msgspec.Struct, tag=True):
    task_id: str
    url: str
    headers: dict[str, str]
    body: Any  # TaskResult
    report: Any  # callable(task_id, Delivery, final_status | None)
    # A delivery resumed after a restart continues its numbering and retry budget.
    first_attempt: int = 1
    failures: int = 0
    last_attempt_at: float | None = None  # epoch seconds: a resumed retry waits out its backoff
    record_outcome: bool = True  # persist the task's outcome before the first attempt
    worker: str | None = None  # the worker it ran on and when it started, journaled with the outcome
    started_at: float | None = None


OUTCOME_RETRIES = 3  # store comebacks an outcome waits for before it is delivered unjournaled


class _Owed:
    """One delivery the sender owes: its message, the last attempt number used, the attempts
    that failed (the retry budget) and whether its outcome is journaled."""

    __slots__ = ("msg", "attempts", "failures", "recorded", "recording")

    def __init__(self, msg: Deliver):
        self.msg = msg
        self.attempts = msg.first_attempt - 1
        self.failures = msg.failures
        self.recorded = not msg.record_outcome
        self.recording: Any = None  # the outcome's journal write, queued when it was owed


class WebhookSender(Actor):
    def __init__(self, config: WebhookConfig, journal: Any = None):
        super().__init__("webhooks", mailbox_size=4096)
        self.config = config
        self.journal = journal  # a TaskJournal, or None: nothing survives a restart
        self.limiter = trio.CapacityLimiter(MAX_CONCURRENT_DELIVERIES)
        self.outcomes = {"delivered": 0, "failed": 0, "retried": 0}
        self._owed: set[_Owed] = set()  # until each ends: what a restart starts again
        self._nursery: trio.Nursery | None = None
        self._none_owed = trio.Event()
        self._none_owed.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False, timeout=self.config.timeout_s) as client:
            self._client = client
            async with trio.open_nursery() as nursery:
                for owed in self._owed:  # after a failure: the deliveries it cut short
                    nursery.start_soon(self._deliver, owed)
                self._nursery = nursery
                try:
                    await super().run()
                finally:
                    self._nursery = None

    def enqueue(self, msg: Deliver) -> None:
        """Owe one delivery; it starts at once (or when the sender runs again). Never awaits."""
        owed = _Owed(msg)
        if not owed.recorded and self.journal is not None:
            try:  # queued now, ahead of the next task's run (`TaskJournal.finish_soon`)
                owed.recording = self.journal.finish_soon(msg.body, worker=msg.worker, started_at=msg.started_at)
            except Exception as exc:
                log.warning("journal finish failed: %s", exc)
        self._owed.add(owed)
        self._none_owed = trio.Event() if self._none_owed.is_set() else self._none_owed
        if self._nursery is not None:
            try:
                self._nursery.start_soon(self._deliver, owed)
            except RuntimeError:  # the nursery is closing (shutdown): it stays owed
                pass

    async def handle(self, msg: Any, reply: Reply | None) -> None:
        match msg:
            case Deliver():
                self.enqueue(msg)

    async def wait_idle(self) -> None:
        await self._none_owed.wait()

    def _payload(self, body: TaskResult) -> bytes:
        try:
            data = _encode(body)
        except (TypeError, ValueError) as exc:  # a result JSON cannot express
            data = _encode(TaskResult(id=body.id, status="failed", success=False, error=TaskError(
                type="ResultNotSerializable", message=str(exc)[:1000])))
        if len(data) > self.config.max_payload_bytes:
            data = _encode(TaskResult(
                id=body.id, status="failed", success=False,
                error=TaskError(type="PayloadTooLarge",
                                message=f"result over {self.config.max_payload_bytes} bytes"),
            ))
        return data

    async def _deliver(self, owed: _Owed) -> None:
        msg = owed.msg
        try:
            with log_ids(task_id=msg.task_id):
                await self._attempts(owed)
        except Exception as exc:  # contained: the other deliveries go on
            log_failure(log, exc, "webhook for task %s: delivery failed", msg.task_id)
            self.outcomes["failed"] += 1
            # Not journaled as settled: after a restart it is tried again.
            self._report(msg, Delivery(attempt=owed.attempts, at=rfc3339(utcnow()),
                                       error="the sender failed"), "failed")
        # Not in a `finally`: a delivery cut short by the sender's failure stays owed.
        self._owed.discard(owed)
        if not self._owed:
            self._none_owed.set()

    async def _attempts(self, owed: _Owed) -> None:
        msg = owed.msg
        merged = merged_headers(self.config.headers, msg.headers, {"Content-Type": "application/json",
                                                                   "X-Amp-Task-Id": msg.task_id})
        # Values are latin-1 (admission checked); httpx would encode a str value as ASCII.
        fixed = [(name.encode("ascii"), value.encode("latin-1")) for name, value in merged.items()
                 if name.lower() not in SENDER_OWNED]
        payload = self._payload(msg.body)
        if not owed.recorded:  # the outcome row also reserves attempt 1
            await self._record_outcome(owed)
            owed.recorded = True
        async with self.limiter:
            if owed.failures and msg.last_attempt_at is not None and owed.attempts == msg.first_attempt - 1:
                await trio.sleep(max(0.0, self._backoff(owed.failures) - (time.time() - msg.last_attempt_at)))
            while owed.failures < self.config.attempts:
                owed.attempts += 1
                attempt = owed.attempts
                if attempt > 1:  # written before the POST: a restart never reuses the number
                    await self._journal("begin_attempt", msg.task_id, attempt, time.time())
                # The task id and attempt number let a receiver deduplicate (delivery is at-least-once).
                headers = [*fixed, (b"X-Amp-Delivery-Attempt", b"%d" % attempt)]
                if self.config.signing_key:  # signed per attempt: its timestamp is when it went out
                    headers.append((b"X-Amp-Signature", signature(self.config.signing_key, payload, time.time())))
                try:
                    delivery = await self._attempt(msg.url, headers, payload, attempt)
                except Exception as exc:  # a bug, or a value admission let through: this attempt failed
                    log.warning("webhook for task %s: attempt %d raised %s: %s", msg.task_id, attempt,
                                type(exc).__name__, exc)
                    delivery = Delivery(attempt=attempt, at=rfc3339(utcnow()), error=_error_text(exc))
                ok = delivery.status_code is not None and 200 <= delivery.status_code < 300
                owed.failures += not ok
                last = ok or owed.failures >= self.config.attempts
                final = None if not last else ("delivered" if ok else "failed")
                await self._journal("record_attempt", msg.task_id, attempt, status_code=delivery.status_code,
                                    error=delivery.error, final_status=final)
                if last and msg.headers:  # settled: its headers are needed no more
                    await self._journal("forget_headers", msg.task_id)
                self._report(msg, delivery, final)
                if ok:
                    self.outcomes["delivered"] += 1
                    return
                if last:
                    self.outcomes["failed"] += 1
                    log.warning("webhook for task %s failed after %d attempts", msg.task_id, attempt)
                    return
                self.outcomes["retried"] += 1
                await trio.sleep(self._backoff(owed.failures))

    def _report(self, msg: Deliver, delivery: Delivery, final: str | None) -> None:
        report: Callable[[str, Delivery, str | None], None] = msg.report
        try:
            report(msg.task_id, delivery, final)
        except Exception as exc:
            log_failure(log, exc, "webhook for task %s: could not record attempt %d", msg.task_id, delivery.attempt)

    async def _attempt(self, url: str, headers: list[tuple[bytes, bytes]], payload: bytes, attempt: int) -> Delivery:
        at = rfc3339(utcnow())
        try:
            await check_target(url, self.config.allow_private)
            response = await self._client.post(url, content=payload, headers=headers)
            return Delivery(attempt=attempt, at=at, status_code=response.status_code)
        except (httpx.HTTPError, UnsafeTarget, OSError) as exc:
            return Delivery(attempt=attempt, at=at, error=_error_text(exc))

    async def _journal(self, method: str, *args: Any, **kwargs: Any) -> None:
        """A journal write; a failing store costs a duplicate after a restart, not this delivery."""
        if self.journal is None:
            return
        try:
            await getattr(self.journal, method)(*args, **kwargs)
        except Exception as exc:
            log.warning("journal %s failed: %s", method, exc)

    async def _record_outcome(self, owed: _Owed) -> None:
        """Journal first, then deliver: with the store away, the delivery waits for it to come
        back (at most OUTCOME_RETRIES times), so an outcome delivered is never one a restart would
        run again. Past the bound, or on any other failure, it is delivered unrecorded (logged)."""
        if self.journal is None:
            return
        msg, write = owed.msg, owed.recording
        for retry in range(OUTCOME_RETRIES + 1):
            try:
                if write is not None:
                    await write()
                else:
                    await self.journal.finish(msg.body, worker=msg.worker, started_at=msg.started_at)
                return
            except StoreUnavailable as exc:
                if retry == OUTCOME_RETRIES:
                    log.warning("task %s: its outcome could not be journaled (%s); delivered all the same",
                                msg.task_id, exc)
                    return
                write = None  # asked again once the store is back
                await self.journal.store.until_available()
            except Exception as exc:
                log.warning("journal finish failed: %s", exc)
                return

    def _backoff(self, attempt: int) -> float:
        delay = min(self.config.max_delay_s, self.config.base_delay_s * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter: retries of many tasks spread out
