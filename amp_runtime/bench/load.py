"""A lean keep-alive HTTP/1.1 load generator on trio (for benchmarks; not a general client).

Each connection sends one request at a time with a pre-encoded request line and body, parses
just enough of the response (status, content-length or chunked) and records the latency.
Stream responses also record the time to the first `data:` event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    first_event_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0
    events: int = 0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


def build_request(url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    host = urlsplit(url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Conn:
    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buf = bytearray()
        self.closing = False

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    async def read_until(self, marker: bytes) -> bytes:
        while True:
            index = self.buf.find(marker)
            if index >= 0:
                out = bytes(self.buf[:index])
                del self.buf[: index + len(marker)]
                return out
            await self._fill()

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def response(self, on_chunk=None) -> tuple[int, bytes]:
        head = await self.read_until(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self.closing = headers.get(b"connection", b"").lower() == b"close"  # e.g. hypercorn's recycling
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = bytearray()
            while True:
                size = int((await self.read_until(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.read_until(b"\r\n")
                    return status, bytes(body)
                chunk = await self.read_exactly(size)
                await self.read_exactly(2)
                if on_chunk is not None:
                    on_chunk(chunk)
                body += chunk
        length = int(headers.get(b"content-length", b"0"))
        return status, await self.read_exactly(length)


async def run_load(
    url: str, path: str, body: bytes, *, headers: dict[str, str] | None = None,
    concurrency: int = 50, total: int | None = None, duration_s: float | None = None,
    method: str = "POST", progress=None, count_in_body: bytes | None = None,
) -> LoadResult:
    """Drive `concurrency` keep-alive connections until `total` requests or `duration_s` pass.

    `count_in_body`: count its occurrences in each response as events (a batch's successful lines)."""
    parts = urlsplit(url)
    request = build_request(url, method, path, body, headers or {})
    result = LoadResult()
    remaining = [total if total is not None else 1 << 62]
    started = time.perf_counter()
    deadline = trio.current_time() + duration_s if duration_s else float("inf")

    def count_events(chunk: bytes) -> None:
        result.events += chunk.count(b"data:") - chunk.count(b"event:")

    async def client() -> None:
        conn = None
        while remaining[0] > 0 and trio.current_time() < deadline:
            remaining[0] -= 1
            try:
                if conn is None:
                    conn = _Conn(await trio.open_tcp_stream(parts.hostname, parts.port or 80))
                t0 = time.perf_counter()
                first: list[float] = []

                def on_chunk(chunk: bytes, t0=t0, first=first) -> None:
                    if not first and b"data:" in chunk:
                        first.append(time.perf_counter() - t0)
                    count_events(chunk)

                await conn.stream.send_all(request)
                status, answer = await conn.response(on_chunk)
                if count_in_body is not None:
                    result.events += answer.count(count_in_body)
                result.latencies_s.append(time.perf_counter() - t0)
                if first:
                    result.first_event_s.append(first[0])
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if conn.closing:  # the server said so: the next request goes on a new connection
                    await conn.stream.aclose()
                    conn = None
            except (OSError, ConnectionError, trio.BrokenResourceError, ValueError, IndexError):
                result.errors += 1
                if conn is not None:
                    await conn.stream.aclose()
                conn = None

    async with trio.open_nursery() as nursery:
        if progress is not None:
            nursery.start_soon(_report_progress, progress, result, started, nursery.cancel_scope)
        async with trio.open_nursery() as clients:
            for _ in range(concurrency):
                clients.start_soon(client)
        nursery.cancel_scope.cancel()
    result.elapsed_s = time.perf_counter() - started
    return result


async def _report_progress(progress, result: LoadResult, started: float, scope) -> None:
    while True:
        await trio.sleep(0.5)
        progress(result, time.perf_counter() - started)
