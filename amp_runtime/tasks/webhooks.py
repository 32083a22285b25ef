"""Webhook delivery: POST a finished task's outcome to its URL, retrying with backoff + jitter.

The sender is an actor with one shared HTTP client; each delivery runs in its nursery, bounded
by a limiter. Every attempt is reported back to the task's worker, which owns the record.
Delivery is at-least-once: every POST carries `X-Amp-Task-Id` and `X-Amp-Delivery-Attempt`
(1, 2, ... per task, never reused, also across restarts) so receivers can deduplicate. With a
journal, the outcome is persisted before the first attempt and every attempt before and after it
goes out, so a restart resumes what is owed (see `journal.py`).
Redirects are not followed; URLs resolving to private, loopback or link-local addresses are
refused unless `[webhook] allow_private` (checked at submission and again before each attempt).
"""

from __future__ import annotations

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
from ..core.actor import Actor, Reply
from ..core.clock import rfc3339, utcnow
from .models import Delivery, TaskError, TaskResult

log = logging.getLogger("amp_runtime.webhooks")
_encode = msgspec.json.Encoder().encode
MAX_CONCURRENT_DELIVERIES = 64


class UnsafeTarget(Exception):
    pass


def url_problems(url: str) -> list[str]:
    """Syntax only: scheme and host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return [f"webhook.url must be an http or https URL, got {url!r}"]
    if not parts.hostname:
        return [f"webhook.url has no host: {url!r}"]
    return []


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
    # journal: a delivery resumed after a restart continues its numbering and retry budget
    first_attempt: int = 1
    failures: int = 0
    last_attempt_at: float | None = None  # epoch seconds: a resumed retry waits out its backoff
    record_outcome: bool = True  # journal: persist the task's outcome before the first attempt


TASK_ID_HEADER = "X-Amp-Task-Id"
ATTEMPT_HEADER = "X-Amp-Delivery-Attempt"


class WebhookSender(Actor):
    def __init__(self, config: WebhookConfig, journal: Any = None):
        super().__init__("webhooks", mailbox_size=4096)
        self.config = config
        self.journal = journal  # a TaskJournal, or None: nothing survives a restart
        self.limiter = trio.CapacityLimiter(MAX_CONCURRENT_DELIVERIES)
        self.outcomes = {"delivered": 0, "failed": 0, "retried": 0}
        self._pending = 0
        self._none_pending = trio.Event()
        self._none_pending.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False, timeout=self.config.timeout_s) as client:
            self._client = client
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await super().run()

    async def handle(self, msg: Any, reply: Reply | None) -> None:
        match msg:
            case Deliver():
                self._pending += 1
                self._none_pending = trio.Event()
                self._nursery.start_soon(self._deliver, msg)

    async def wait_idle(self) -> None:
        await self._none_pending.wait()

    def _payload(self, body: TaskResult) -> bytes:
        data = _encode(body)
        if len(data) > self.config.max_payload_bytes:
            data = _encode(TaskResult(
                id=body.id, status="failed", success=False,
                error=TaskError(type="PayloadTooLarge",
                                message=f"result over {self.config.max_payload_bytes} bytes"),
            ))
        return data

    async def _deliver(self, msg: Deliver) -> None:
        report: Callable[[str, Delivery, str | None], None] = msg.report
        headers = {**self.config.headers, **msg.headers, "Content-Type": "application/json"}
        payload = self._payload(msg.body)
        try:
            if msg.record_outcome:
                await self._journal("finish", msg.body)
            async with self.limiter:
                if msg.failures and msg.last_attempt_at is not None:
                    await trio.sleep(max(0.0, self._backoff(msg.failures) - (time.time() - msg.last_attempt_at)))
                failures = msg.failures
                for attempt in range(msg.first_attempt, msg.first_attempt + self.config.attempts + 1):
                    if not (attempt == 1 and msg.record_outcome):  # the outcome row stands for attempt 1
                        await self._journal("begin_attempt", msg.task_id, attempt, time.time())
                    numbered = {**headers, TASK_ID_HEADER: msg.task_id, ATTEMPT_HEADER: str(attempt)}
                    delivery = await self._attempt(msg.url, numbered, payload, attempt)
                    ok = delivery.status_code is not None and 200 <= delivery.status_code < 300
                    failures += not ok
                    last = ok or failures >= self.config.attempts
                    final = None if not last else ("delivered" if ok else "failed")
                    await self._journal("record_attempt", msg.task_id, attempt, status_code=delivery.status_code,
                                        error=delivery.error, final_status=final)
                    report(msg.task_id, delivery, final)
                    if ok:
                        self.outcomes["delivered"] += 1
                        return
                    if last:
                        self.outcomes["failed"] += 1
                        log.warning("webhook for task %s failed after %d attempts", msg.task_id, attempt)
                        return
                    self.outcomes["retried"] += 1
                    await trio.sleep(self._backoff(failures))
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._none_pending.set()

    async def _attempt(self, url: str, headers: dict[str, str], payload: bytes, attempt: int) -> Delivery:
        at = rfc3339(utcnow())
        try:
            await check_target(url, self.config.allow_private)
            response = await self._client.post(url, content=payload, headers=headers)
            return Delivery(attempt=attempt, at=at, status_code=response.status_code)
        except (httpx.HTTPError, UnsafeTarget, OSError) as exc:
            return Delivery(attempt=attempt, at=at, error=f"{type(exc).__name__}: {exc}")

    async def _journal(self, method: str, *args: Any, **kwargs: Any) -> None:
        """A journal write; a failing store costs a duplicate after a restart, not this delivery."""
        if self.journal is None:
            return
        try:
            await getattr(self.journal, method)(*args, **kwargs)
        except Exception as exc:
            log.warning("journal %s failed: %s", method, exc)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.config.max_delay_s, self.config.base_delay_s * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter: retries of many tasks spread out
