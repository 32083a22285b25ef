"""The HTTP server's connections: hypercorn's per-connection protocol under our own accept loop.

Hypercorn bounds neither the open connections nor what an idle one costs, and its serve loop
builds its listeners itself; here each accepted connection is counted before hypercorn's
`TCPServer` runs it. Past `[http] max_connections` the longest-idle connection is closed to make
room, or, when every one is answering a request, the newcomer gets a 503 and is closed: the
process never runs out of descriptors. A busy connection cannot be held either: one whose request
body is not in within `[http] body_timeout_s`, or whose client reads no part of an answer for
`[http] send_timeout_s`, is closed (hypercorn bounds neither, and shields its socket writes, so
only closing the socket ends such a write). The same object is the outermost ASGI wrapper, so it knows
which connection is answering, lets every response end the way hypercorn needs to close or
recycle the connection, and marks responses `Connection: close` once the drain began.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr, wrap_app

from .http import ApiError, render_coded

log = logging.getLogger("amp_runtime.http")

# Descriptors kept back from the connections: the store's files and connections, the log, the
# listening socket, trio's own, outgoing webhook and peer connections.
FD_RESERVE = 64
FDS_PER_PROCESS_SLOT = 4  # a process-pool worker's pipes and its process handle
# The last body message: hypercorn writes it, then closes or recycles the connection (bounded:
# hypercorn's own socket write is shielded; this covers its bookkeeping around it).
FINAL_SEND_S = 5.0
REFUSAL_LINGER_S = 1.0  # a refused client's request is read this long so the 503 is not reset away
# Refusals answered (and lingering) at once; past them a newcomer is closed unanswered, so a flood
# of connections costs at most this many descriptors beyond max_connections.
MAX_REFUSING = 16
REFUSAL_LOG_EVERY_S = 10.0
MAX_RECV = 65536
# WebSockets may hold at most this share of max_connections: a socket the client never reads costs
# the server nothing to fill for hours (a slots push is ~100 bytes), so it cannot be bounded by a
# send clock; the rest stays for requests.
WEBSOCKET_SHARE = 0.5
SEND_PIECE = 16384  # an answer's body goes to the socket in pieces this big, each timed on its own


def default_max_connections(process_slots: int) -> int:
    """The open-file soft limit less what the rest of the process needs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(soft - FD_RESERVE - FDS_PER_PROCESS_SLOT * process_slots, 1)


class _Exchange:
    """One request (or WebSocket) being answered on a connection, with its own clocks (HTTP/2
    answers several at once): the body's, from its first wait to its last part, and the answer's,
    from each piece handed to the socket until it is taken."""

    __slots__ = ("body_in", "receiving_since", "sending_since")

    def __init__(self, body_in: bool):
        self.body_in = body_in
        self.receiving_since: float | None = None
        self.sending_since: float | None = None


@dataclass(eq=False)
class _Connection:
    stream: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    exchanges: set[_Exchange] = field(default_factory=set)  # being answered: the connection is busy
    idle_since: float = field(default_factory=trio.current_time)


class Connections:
    """`await Connections(asgi_app, hypercorn_config, max_connections).serve(task_status=...)`
    serves until `drain()`, then lets the open connections finish their answer (up to hypercorn's
    `graceful_timeout`) and returns."""

    def __init__(self, app: Any, config: HypercornConfig, max_connections: int, *, retry_after_s: int = 1,
                 body_timeout_s: float = 30.0, send_timeout_s: float = 30.0):
        self.app = app
        self.config = config
        self.max_connections = max_connections
        self.body_timeout_s = body_timeout_s
        self.send_timeout_s = send_timeout_s
        self.max_websockets = max(1, int(max_connections * WEBSOCKET_SHARE))
        self._websockets = 0
        self.draining = False
        self._open: dict[Any, _Connection] = {}
        self._context = WorkerContext(None)
        self._accepting = trio.CancelScope()
        self._refusal_logged = float("-inf")
        self._refusing = 0
        self._cut_logged = float("-inf")
        body = render_coded(ApiError(503, "TOO_MANY_CONNECTIONS",
                                     f"the server holds its limit of {max_connections} connections, all busy"))
        self._refusal = (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"retry-after: %d\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
        ) % (retry_after_s, len(body), body)
        self._websocket_refusal = render_coded(ApiError(
            503, "TOO_MANY_WEBSOCKETS", f"the server holds its limit of {self.max_websockets} WebSockets"))
        self._retry_after = b"%d" % retry_after_s

    def drain(self) -> None:
        """From now on no connection is accepted, every response says `Connection: close`, and
        hypercorn closes each connection once idle (the idle ones at once)."""
        self.draining = True
        self._accepting.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        asgi = wrap_app(self, config.wsgi_max_body_size, "asgi")
        lifespan_state: dict[str, Any] = {}
        lifespan = Lifespan(asgi, config, lifespan_state)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            sockets = config.create_sockets()
            listeners, binds = [], []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            handler = partial(self._connection, asgi, ConnectionState(lifespan_state.copy()))
            log.info("at most %d open connections; an idle one is closed after %gs",
                     self.max_connections, config.keep_alive_timeout)
            async with trio.open_nursery() as watch:
                watch.start_soon(self._watch)
                async with trio.open_nursery() as handlers:
                    task_status.started(binds)
                    with self._accepting:  # serve_listeners closes the listeners when cancelled
                        await trio.serve_listeners(handler, listeners, handler_nursery=handlers)
                    await self._context.terminated.set()  # hypercorn: close after the answer, idle at once
                    handlers.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
                watch.cancel_scope.cancel()
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _connection(self, asgi: Any, state: ConnectionState, stream: trio.SocketStream) -> None:
        try:
            client = parse_socket_addr(stream.socket.family, stream.socket.getpeername())
        except OSError:  # gone already
            await trio.aclose_forcefully(stream)
            return
        if self.draining:
            await trio.aclose_forcefully(stream)
            return
        if len(self._open) >= self.max_connections and not self._close_idlest():
            await self._refuse(stream)
            return
        connection = self._open[client] = _Connection(stream)
        try:
            with connection.scope:
                await TCPServer(asgi, self.config, self._context, state, stream)
        finally:
            if self._open.get(client) is connection:
                del self._open[client]
            await trio.aclose_forcefully(stream)

    def _close_idlest(self) -> bool:
        idle = [(client, c) for client, c in self._open.items() if not c.exchanges]
        if not idle:
            return False
        client, connection = min(idle, key=lambda item: item[1].idle_since)
        del self._open[client]  # no longer counted: its descriptor is closed as its handler unwinds
        connection.scope.cancel()
        return True

    async def _watch(self) -> None:
        """Close every connection whose body or reader has been stalled past its bound."""
        every = max(0.05, min(1.0, self.body_timeout_s / 4, self.send_timeout_s / 4))
        while True:
            await trio.sleep(every)
            now = trio.current_time()
            for client, connection in list(self._open.items()):
                for exchange in connection.exchanges:
                    if exchange.receiving_since is not None and now - exchange.receiving_since > self.body_timeout_s:
                        self._cut(client, connection, "a request body was not in within [http] body_timeout_s")
                        break
                    if exchange.sending_since is not None and now - exchange.sending_since > self.send_timeout_s:
                        self._cut(client, connection, "its client read nothing of an answer for [http] send_timeout_s")
                        break

    def _cut(self, client: Any, connection: _Connection, why: str) -> None:
        del self._open[client]
        now = trio.current_time()
        if now - self._cut_logged >= REFUSAL_LOG_EVERY_S:
            self._cut_logged = now
            log.warning("closed a connection from %s: %s", client[0] if client else "?", why)
        # Closing the socket wakes a write hypercorn shields (and the read beside it) with an error.
        connection.stream.socket.close()
        connection.scope.cancel()

    async def _refuse(self, stream: trio.SocketStream) -> None:
        """Answer 503 without hypercorn, then read until the client closes (bounded)."""
        now = trio.current_time()
        if now - self._refusal_logged >= REFUSAL_LOG_EVERY_S:  # a flood must not flood the log
            self._refusal_logged = now
            log.warning("refusing connections: %d open, all busy ([http] max_connections)", len(self._open))
        if self._refusing >= MAX_REFUSING:  # a flood: its descriptors are given back at once
            await trio.aclose_forcefully(stream)
            return
        self._refusing += 1
        try:
            with trio.move_on_after(REFUSAL_LINGER_S):
                try:
                    await stream.send_all(self._refusal)
                    await stream.send_eof()
                    while await stream.receive_some(MAX_RECV):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        finally:
            self._refusing -= 1
        await trio.aclose_forcefully(stream)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        connection = self._open.get(scope.get("client"))
        exchange = _Exchange(body_in=connection is None or scope["type"] != "http")
        if connection is not None:
            connection.exchanges.add(exchange)

        def answered() -> None:  # once its last byte is sent; without exchanges the connection is idle
            if connection is not None and exchange in connection.exchanges:
                connection.exchanges.discard(exchange)
                if not connection.exchanges:
                    connection.idle_since = trio.current_time()

        try:
            if scope["type"] == "http":
                await self.app(scope, partial(self._receive, receive, exchange),
                               partial(self._send, send, answered, exchange))
            else:
                await self._websocket(scope, receive, partial(self._timed_send, send, exchange))
        finally:
            answered()

    async def _websocket(self, scope: dict, receive: Any, send: Any) -> None:
        if self._websockets >= self.max_websockets:  # refused as HTTP, before the upgrade
            await receive()  # websocket.connect
            await send({"type": "websocket.http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", self._retry_after)]})
            await send({"type": "websocket.http.response.body", "body": self._websocket_refusal})
            return
        self._websockets += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._websockets -= 1

    @staticmethod
    async def _receive(receive: Any, exchange: _Exchange) -> dict:
        if exchange.body_in:  # after the body only the disconnect is waited for: unbounded
            return await receive()
        if exchange.receiving_since is None:
            exchange.receiving_since = trio.current_time()
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            exchange.body_in = True
            exchange.receiving_since = None
        return message

    @staticmethod
    async def _timed_send(send: Any, exchange: _Exchange, message: dict) -> None:
        """A body in pieces of SEND_PIECE, each on its own clock: the bound is on a client that
        reads nothing, not on one that reads a big answer slowly."""
        body = message.get("body", b"") if message["type"] == "http.response.body" else b""
        if len(body) <= SEND_PIECE:
            exchange.sending_since = trio.current_time()
            try:
                await send(message)
            finally:
                exchange.sending_since = None
            return
        more = message.get("more_body", False)
        for start in range(0, len(body), SEND_PIECE):
            end = start + SEND_PIECE
            exchange.sending_since = trio.current_time()
            try:
                await send({"type": "http.response.body", "body": body[start:end],
                            "more_body": more if end >= len(body) else True})
            finally:
                exchange.sending_since = None

    async def _send(self, send: Any, answered: Any, exchange: _Exchange, message: dict) -> None:
        send = partial(self._timed_send, send, exchange)
        kind = message["type"]
        if kind == "http.response.start" and self.draining:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        elif kind == "http.response.body" and not message.get("more_body", False):
            # Hypercorn reports the stream closed from inside this send, and Quart-Trio then cancels
            # the handler sending it: the connection would be neither closed nor recycled. The
            # shield's bound: each piece gets send_timeout_s (the watcher closes the socket past it).
            pieces = len(message.get("body", b"")) // SEND_PIECE + 1
            with trio.move_on_after(FINAL_SEND_S + pieces * self.send_timeout_s, shield=True):
                await send(message)
            answered()
            return
        await send(message)
