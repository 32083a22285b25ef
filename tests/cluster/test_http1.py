"""The forwarding pool against a peer on a real socket that misbehaves on purpose: a POST it
took whole is never written again (the task would run twice), and an idle connection the
peer closed is dropped before it is used."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from amp_runtime.cluster.http1 import BrokenExchange, PeerConnections

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class FakePeer:
    """Answers the first request of each connection, then does what `after_first` says:
    "drop-next" reads the next request whole and closes without answering; "close" closes at
    once after the first answer (without saying so); "keep" answers every request."""

    def __init__(self, after_first: str):
        self.after_first = after_first
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = trio.Event()

    async def _request(self, stream: trio.SocketStream, buffer: bytearray) -> bool:
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                return False
            buffer += data
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += await stream.receive_some(65536)
        self.requests.append(rest[:length])
        buffer[:] = rest[length:]
        return True

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = bytearray()
        try:
            if not await self._request(stream, buffer):
                return
            await stream.send_all(ANSWER)
            if self.after_first == "drop-next":
                await self._request(stream, buffer)
            while self.after_first == "keep" and await self._request(stream, buffer):
                await stream.send_all(ANSWER)
        finally:
            await stream.aclose()
            self.closed.set()


async def serve(nursery: trio.Nursery, peer: FakePeer) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, peer.handle, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_a_post_the_peer_took_whole_is_not_sent_again_when_it_closes_without_answering(nursery):
    peer = FakePeer("drop-next")
    pool = PeerConnections(await serve(nursery, peer), connect_timeout_s=2, keep_alive_s=60)
    assert (await pool.post("/task", b'{"n":1}', {})).status == 200
    with trio.fail_after(10), pytest.raises(BrokenExchange):
        await pool.post("/task", b'{"n":2}', {})
    assert peer.requests == [b'{"n":1}', b'{"n":2}'], "the second task was sent again"
    await pool.aclose()


async def test_an_idle_connection_the_peer_closed_is_not_used(nursery):
    peer = FakePeer("close")
    pool = PeerConnections(await serve(nursery, peer), connect_timeout_s=2, keep_alive_s=60)
    assert (await pool.post("/task", b'{"n":1}', {})).status == 200
    with trio.fail_after(10):
        await peer.closed.wait()
    peer.closed = trio.Event()
    with trio.fail_after(10):
        assert (await pool.post("/task", b'{"n":2}', {})).status == 200  # on a fresh connection
    assert peer.requests == [b'{"n":1}', b'{"n":2}']
    await pool.aclose()


async def test_a_live_idle_connection_past_descriptor_1024_is_reused(nursery):
    """Staleness is asked with poll(): select() refuses descriptors past FD_SETSIZE, and a busy
    process (max_connections sized from ulimit -n) has them."""
    import socket

    peer = FakePeer("keep")
    pool = PeerConnections(await serve(nursery, peer), connect_timeout_s=2, keep_alive_s=60)
    filler = [socket.socket() for _ in range(1100)]
    try:
        for n in range(3):
            assert (await pool.post("/task", b'{"n":%d}' % n, {})).status == 200
    finally:
        for sock in filler:
            sock.close()
        await pool.aclose()
    assert peer.connections == 1, f"{peer.connections} connections for 3 posts"
