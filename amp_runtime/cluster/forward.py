"""Forwarding `POST /task` from the coordinator to a node, all three modes.

One shared httpx client (keep-alive pool) for every forward. Nothing is buffered in stream
mode: the node's bytes are relayed as they arrive. A node that cannot be connected to has
seen nothing, so the task is tried once more on the next best node (or here).
"""

from __future__ import annotations

import logging

import httpx
import msgspec
from quart import Response

from ..tasks.models import TaskError, TaskRequest, TaskResult
from .nodes import NodeTable, Pick, Picked, SlotsLost

log = logging.getLogger("amp_runtime.cluster")
_encode = msgspec.json.Encoder().encode
_PASSED_HEADERS = ("retry-after", "x-task-id", "cache-control")


class NodeUnreachable(Exception):
    pass


class Forwarder:
    def __init__(self, table: NodeTable, cluster_key: str, connect_timeout_s: float):
        self.table = table
        self._headers = {"Authorization": f"Bearer {cluster_key}", "Content-Type": "application/json"}
        # No read timeout: the node enforces each function's own timeout.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

    async def pick(self, group: str, exclude: frozenset[str] = frozenset(), above: int | None = None) -> Picked | None:
        return await self.table.ask(Pick(group, exclude, above))

    async def forward(self, picked: Picked, body: TaskRequest, fallback) -> Response:
        """The node's answer. `fallback(exclude)` returns another `Picked`, or None to run
        the task on this process (then `NodeUnreachable` is raised for the route to do so)."""
        data = _encode(body)
        tried: set[str] = set()
        while True:
            tried.add(picked.url)
            try:
                return await self._send(picked, body.mode, data)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                log.warning("cluster: node %s unreachable (%s); routing elsewhere", picked.url, type(exc).__name__)
                self.table.tell_nowait(SlotsLost(picked.url))
                if len(tried) > 1:
                    raise NodeUnreachable(picked.url) from None
                picked = await fallback(frozenset(tried))
                if picked is None:
                    raise NodeUnreachable(", ".join(tried)) from None

    async def _send(self, picked: Picked, mode: str, data: bytes) -> Response:
        request = self.client.build_request("POST", picked.url + "/task", content=data, headers=self._headers)
        upstream = await self.client.send(request, stream=True)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS}
        headers["X-Amp-Node"] = picked.url
        content_type = upstream.headers.get("content-type", "application/json")
        if mode != "stream" or upstream.status_code != 200:
            try:
                content = await upstream.aread()
            finally:
                await upstream.aclose()
            return Response(content, status=upstream.status_code, content_type=content_type, headers=headers)
        return self._relay_stream(upstream, headers, picked.url)

    @staticmethod
    def _relay_stream(upstream: httpx.Response, headers: dict[str, str], url: str) -> Response:
        task_id = upstream.headers.get("x-task-id", "")

        async def events():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                log.warning("cluster: stream from node %s broke: %s", url, type(exc).__name__)
                result = TaskResult(id=task_id, status="failed", success=False,
                                    error=TaskError(type="NodeLost", message=f"node {url} stopped answering"))
                yield b"\n\nevent: error\ndata: " + _encode(result) + b"\n\n"
            finally:
                await upstream.aclose()  # the reader left or the stream ended: the node cancels its task

        response = Response(events(), content_type="text/event-stream", headers=headers)
        response.timeout = None
        return response

    async def aclose(self) -> None:
        await self.client.aclose()
