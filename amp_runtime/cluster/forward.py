"""Forwarding `POST /task` from one peer to another, all three modes.

The forwarded body names the picked worker and the request carries `X-Amp-Forwarded`, so the
receiving peer runs it there and never routes it on. Credentials: `[cluster] key` when set,
else the client's own Authorization header (`auth.INCOMING`).

Sync and webhook tasks go through a lean keep-alive pool per peer (`http1`); streams through
one shared httpx client, relayed as the peer's bytes arrive (nothing buffered). A peer that
cannot be connected to has seen nothing, so the task is tried once more on the next best peer
(or here). A peer that fails after taking the request answers 502 (sync) or ends the stream
with `event: error`: the task may have run, so it is not sent again.
"""

from __future__ import annotations

import logging

import httpx
import msgspec
import trio
from quart import Response

from ..core.http import ApiError
from ..core.sse import sse_event
from ..tasks.models import TaskError, TaskRequest, TaskResult
from .auth import FORWARDED_HEADER, INCOMING, bearer
from .http1 import REUSE_SHARE, BrokenExchange, ConnectFailed, PeerConnections
from .peers import PeerTable, Picked

log = logging.getLogger("amp_runtime.cluster")
_encode = msgspec.json.Encoder().encode
_PASSED_HEADERS = ("retry-after", "x-task-id", "cache-control")


class PeerUnreachable(Exception):
    pass


class Forwarder:
    def __init__(self, table: PeerTable, cluster_key: str, connect_timeout_s: float, keep_alive_s: float = 5.0):
        self.table = table
        self._cluster_key = cluster_key
        self._connect_timeout_s = connect_timeout_s
        self._keep_alive_s = keep_alive_s  # the peers' [http] keep_alive_s: how long they keep an idle connection
        self._pools: dict[str, PeerConnections] = {}
        self._waiting: dict[str, set[trio.CancelScope]] = {}  # forwards waiting per peer URL
        self._departures: dict[str, int] = {}  # times each peer URL hung (went silent)
        # No read timeout: the peer enforces each function's own timeout.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256,
                                keepalive_expiry=keep_alive_s * REUSE_SHARE),
        )

    def _headers(self) -> dict[str, str]:
        credentials = bearer(self._cluster_key)
        if not credentials and INCOMING.get().authorization is not None:
            credentials = {"Authorization": INCOMING.get().authorization}
        return {**credentials, "Content-Type": "application/json", FORWARDED_HEADER: "1"}

    async def forward(self, picked: Picked, body: TaskRequest, fallback) -> Response:
        """The peer's answer. `fallback(exclude)` returns another `Picked`, or None to run
        the task on this process (then `PeerUnreachable` is raised for the route to do so).
        A sync or webhook forward still waiting when its peer goes silent (it hung) answers
        502 `NODE_LEFT`."""
        headers = self._headers()
        tried: set[str] = set()
        while True:
            tried.add(picked.url)
            data = _encode(msgspec.structs.replace(body, worker=picked.worker))
            try:
                try:
                    if body.mode == "stream":
                        response = await self._send_stream(picked, data, headers)
                    else:
                        response = await self._send(picked, data, headers)
                finally:
                    if picked.counted:
                        self.table.done(picked.url, picked.worker)
            except (httpx.ConnectError, httpx.ConnectTimeout, ConnectFailed) as exc:
                log.warning("cluster: peer %s unreachable (%s); routing elsewhere", picked.url, type(exc).__name__)
                self.table.refused(picked.url)
                self.peer_gone(picked.url)
                if len(tried) > 1:
                    raise PeerUnreachable(picked.url) from None
                picked = fallback(frozenset(tried))
                if picked is None:
                    raise PeerUnreachable(", ".join(tried)) from None
                continue
            if response.status_code != 503 or len(tried) > 1:
                return response
            # Maintenance or draining, learned before its slots push says so: it ran nothing.
            self.table.slots_lost(picked.url)
            alternative = fallback(frozenset(tried))
            if alternative is None:
                return response
            picked = alternative

    async def _send(self, picked: Picked, data: bytes, headers: dict[str, str]) -> Response:
        pool = self._pools.get(picked.url)
        if pool is None:
            pool = self._pools[picked.url] = PeerConnections(picked.url, self._connect_timeout_s, self._keep_alive_s)
        waiting = self._waiting.setdefault(picked.url, set())
        try:
            with trio.CancelScope() as scope:
                waiting.add(scope)
                try:
                    answer = await pool.post("/task", data, headers)
                finally:
                    waiting.discard(scope)
            if scope.cancelled_caught:
                raise ApiError(502, "NODE_LEFT", f"peer {picked.url} stopped answering (it hung); "
                               "the task may have run there")
        except BrokenExchange as exc:
            log.warning("cluster: peer %s failed answering a task: %s", picked.url, exc)
            raise ApiError(502, "NODE_FAILED", f"peer {picked.url} failed before answering ({exc}); "
                           "the task may have run there") from None
        headers = {k: v for k, v in answer.headers.items() if k in _PASSED_HEADERS}
        headers["X-Amp-Node"] = picked.url
        return Response(answer.body, status=answer.status,
                        content_type=answer.headers.get("content-type", "application/json"), headers=headers)

    async def _send_stream(self, picked: Picked, data: bytes, headers: dict[str, str]) -> Response:
        request = self.client.build_request("POST", picked.url + "/task", content=data, headers=headers)
        waiting = self._waiting.setdefault(picked.url, set())
        with trio.CancelScope() as scope:  # no read timeout: a hung peer's headers wait for `node_left`
            waiting.add(scope)
            try:
                upstream = await self.client.send(request, stream=True)
            finally:
                waiting.discard(scope)
        if scope.cancelled_caught:
            raise ApiError(502, "NODE_LEFT", f"peer {picked.url} stopped answering (it hung); "
                           "the task may have run there")
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS}
        headers["X-Amp-Node"] = picked.url
        if upstream.status_code != 200:
            try:
                content = await upstream.aread()
            finally:
                await upstream.aclose()
            return Response(content, status=upstream.status_code,
                            content_type=upstream.headers.get("content-type", "application/json"), headers=headers)
        return self._relay_stream(upstream, headers, picked.url)

    def _relay_stream(self, upstream: httpx.Response, headers: dict[str, str], url: str) -> Response:
        task_id = upstream.headers.get("x-task-id", "")
        joined = self._departures.get(url, 0)

        def error_event(why: str) -> bytes:
            log.warning("cluster: stream from peer %s broke: %s", url, why)
            result = TaskResult(id=task_id, status="failed", success=False,
                                error=TaskError(type="NodeLost", message=f"peer {url} stopped answering ({why})"))
            return b"\n\n" + sse_event(_encode(result), b"error")  # ends a partial event first

        async def events():
            chunks = upstream.aiter_raw().__aiter__()
            try:
                while True:
                    # Each read is cancelled if the peer hangs meanwhile; a departure between
                    # reads is seen by the counter. No cancel scope spans a yield.
                    if self._departures.get(url, 0) != joined:
                        yield error_event("it hung and left routing")
                        return
                    with trio.CancelScope() as scope:
                        waiting = self._waiting.setdefault(url, set())
                        waiting.add(scope)
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            return
                        finally:
                            waiting.discard(scope)
                    if scope.cancelled_caught:
                        yield error_event("it hung and left routing")
                        return
                    yield chunk
            except httpx.HTTPError as exc:
                yield error_event(type(exc).__name__)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await upstream.aclose()  # the reader left or the stream ended: the peer cancels its task

        response = Response(events(), content_type="text/event-stream", headers=headers)
        response.timeout = None
        return response

    def node_left(self, url: str) -> None:
        """The peer's slots went silent (it hung): stop waiting for its answers."""
        self._departures[url] = self._departures.get(url, 0) + 1
        for scope in self._waiting.pop(url, ()):
            scope.cancel()
        pool = self._pools.pop(url, None)
        if pool is not None:
            pool.close_idle()

    def peer_gone(self, url: str) -> None:
        """The peer left the directory: drop its idle connections (forwards in flight finish)."""
        pool = self._pools.pop(url, None)
        if pool is not None:
            pool.close_idle()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        await self.client.aclose()
