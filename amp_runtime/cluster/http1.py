"""A lean keep-alive HTTP/1.1 client for forwarding request/response tasks to one peer.

Why not httpx here: with many requests in flight its connection pool costs grow with the
number of requests waiting (measured on this runtime: ~120 forwards/s at 64 in flight against
~860/s at 8), and an entry peer may forward every task. This pool does the one thing needed:
POST a body, read a `Content-Length` response, keep the connection for the next request.
Streams (open-ended, chunked) still go through httpx.

A POST runs a task: once all of it was written, it is never written again, even on a reused
connection that then closes without an answer (the peer may have taken it and be running it;
the caller answers 502, "may have run there"). Only a request the peer cannot have read whole
is sent again, on a fresh connection. An idle connection the peer already closed is seen
before it is used (it reads as ready) and dropped.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

# Reuse an idle connection only while the peer surely keeps it: this share of [http] keep_alive_s
# (peers run one config), so a request is rarely sent on a connection the peer is closing.
REUSE_SHARE = 0.8
MAX_HEAD = 64 * 1024


class ConnectFailed(Exception):
    """Nothing was sent: the peer could not be connected to."""


class BrokenExchange(Exception):
    """The peer accepted the request but closed or garbled the answer."""


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Conn:
    __slots__ = ("stream", "buf", "idle_since", "sent")

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buf = bytearray()
        self.idle_since = 0.0
        self.sent = False  # the current request is written whole: it must not be sent again

    def closed_by_peer(self) -> bool:
        """An idle connection has nothing to read unless the peer closed (or broke) it."""
        poller = select.poll()  # not select(): it refuses descriptors past FD_SETSIZE (1024)
        try:
            poller.register(self.stream.socket.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise BrokenExchange("connection closed by the node")
        self.buf += data

    async def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send one request, read its answer; (answer, keep the connection)."""
        self.sent = False
        await self.stream.send_all(request)
        self.sent = True
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise BrokenExchange("response head too large")
            await self._fill()
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        try:
            status = int(head[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise BrokenExchange(f"bad status line {head[0][:80]!r}") from None
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers["content-length"])
        except (KeyError, ValueError):
            raise BrokenExchange("response without a valid Content-Length") from None
        while len(self.buf) < length:
            await self._fill()
        body = bytes(self.buf[:length])
        del self.buf[:length]
        keep = headers.get("connection", "").lower() != "close"
        return Answer(status, headers, body), keep


class PeerConnections:
    """Idle keep-alive connections to one peer, most recently used first."""

    def __init__(self, url: str, connect_timeout_s: float, keep_alive_s: float = 5.0):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self.connect_timeout_s = connect_timeout_s
        self.reuse_idle_s = keep_alive_s * REUSE_SHARE
        self._idle: list[_Conn] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.netloc}", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        conn = self._take()
        if conn is not None:
            try:
                return await self._exchange(conn, request)
            except (BrokenExchange, OSError, trio.BrokenResourceError):
                if conn.sent:  # the node may have read it whole and run it: never twice
                    raise BrokenExchange("the node closed the connection after taking the request") from None
                # not written whole: the node cannot have taken it; once more on a fresh connection
        try:
            with trio.fail_after(self.connect_timeout_s):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        try:
            return await self._exchange(_Conn(stream), request)
        except (OSError, trio.BrokenResourceError) as exc:
            raise BrokenExchange(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, conn: _Conn, request: bytes) -> Answer:
        try:
            answer, keep = await conn.exchange(request)
        except BaseException:
            with trio.CancelScope(shield=True):
                await conn.stream.aclose()
            raise
        if keep:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            await conn.stream.aclose()
        return answer

    def _take(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < self.reuse_idle_s and not conn.closed_by_peer():
                return conn
            conn.stream.socket.close()
        return None

    def close_idle(self) -> None:
        for conn in self._idle:
            conn.stream.socket.close()
        self._idle.clear()

    async def aclose(self) -> None:
        for conn in self._idle:
            await conn.stream.aclose()
        self._idle.clear()
