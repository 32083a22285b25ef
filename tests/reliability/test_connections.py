"""Connections end when HTTP says so, idle ones are bounded, and a drain does not hang them.

On raw sockets, so nothing in a client library reuses, retries or closes for us: a response to
`Connection: close` or to HTTP/1.0 is followed by EOF, an idle keep-alive connection is closed
after `[http] keep_alive_s`, a slow sender or reader after `body_timeout_s` / `send_timeout_s`, more idle connections than the process has descriptors for do not
stop it answering a new client, and SIGTERM closes idle connections at once and marks the
in-flight answers `Connection: close`.
"""

from __future__ import annotations

import json
import resource
import signal
import socket
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from ..helpers import run_cli, spawn_server, wait_until

BATCH = json.dumps([{"function": "echo", "input": 1, "contract": 1}]).encode()
TASK = json.dumps({"function": "echo", "input": 1, "contract": 1}).encode()


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def request(method: str, path: str, *, body: bytes = b"", version: str = "1.1", headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test"]
    if body or method in ("POST", "PUT"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Raw:
    """One raw connection: send bytes, read whole responses, notice the server closing it."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buffer = b""
        self.closed = False

    @classmethod
    async def open(cls, url: str) -> "Raw":
        return cls(await trio.open_tcp_stream(*address(url)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> None:
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # a reset is a close too
            chunk = b""
        if not chunk:
            self.closed = True
            raise EOFError
        self.buffer += chunk

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response whose length is known (Content-Length); EOFError if closed first."""
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def wait_closed(self) -> None:
        """Until the server closes the connection (what it sends meanwhile is kept)."""
        while not self.closed:
            try:
                await self._more()
            except EOFError:
                pass

    async def aclose(self) -> None:
        await self.stream.aclose()


async def closes_after_one_answer(url: str, data: bytes) -> str | None:
    """What went wrong with a request that asks for the connection to close, or None."""
    raw = await Raw.open(url)
    try:
        await raw.send(data)
        with trio.move_on_after(5):
            await raw.wait_closed()
            if not raw.buffer.startswith(b"HTTP/1.1 "):
                return f"closed without an answer: {raw.buffer[:80]!r}"
            return None
        return f"still open 5 s after the answer {raw.buffer[:40]!r}"
    finally:
        await raw.aclose()


ROUTES = [
    ("GET", "/health", b"", {}),
    ("GET", "/tasks/no-such-task", b"", {}),
    ("POST", "/tasks", BATCH, {}),                          # the hot path's streamed answer
    ("POST", "/task", TASK, {}),                            # the hot path's one answer
    ("POST", "/task", TASK, {"Idempotency-Key": "k-1"}),    # the Quart route
    ("GET", "/workers", b"", {}),
    ("GET", "/metrics", b"", {}),
    ("GET", "/jobs", b"", {}),
    ("GET", "/no-such-route", b"", {}),                    # 404 from the error handler
    ("PUT", "/task", TASK, {}),                             # 405
]


async def test_connection_close_is_honoured_on_every_route(server):
    problems = []
    for method, path, body, headers in ROUTES:
        problem = await closes_after_one_answer(
            server.url, request(method, path, body=body, headers={**headers, "Connection": "close"}))
        if problem:
            problems.append(f"{method} {path} with Connection: close: {problem}")
    assert not problems, "\n".join(problems)


async def test_http_1_0_connections_close_after_the_answer(server):
    problems = []
    for method, path, body, headers in ROUTES:
        problem = await closes_after_one_answer(server.url, request(method, path, body=body, version="1.0", headers=headers))
        if problem:
            problems.append(f"{method} {path} over HTTP/1.0: {problem}")
    assert not problems, "\n".join(problems)


async def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_s(server_factory):
    srv = await server_factory(http={"keep_alive_s": 0.5})
    raw = await Raw.open(srv.url)
    try:
        # Keep-alive itself still works, on both layers (a streamed answer has no Content-Length).
        for method, path, body, _ in [route for route in ROUTES if route[1] != "/tasks"][:6]:
            await raw.send(request(method, path, body=body))
            with trio.fail_after(5):
                status, headers, _ = await raw.response()
            assert headers.get("connection") != "close", (method, path, status, headers)
        idle_from = trio.current_time()
        with trio.move_on_after(5):
            await raw.wait_closed()
        idle_for = trio.current_time() - idle_from
        assert raw.closed, "an idle keep-alive connection was still open 5 s after its last answer"
        assert idle_for >= 0.4, f"closed after {idle_for:.2f}s idle, before keep_alive_s"
    finally:
        await raw.aclose()


@pytest.mark.parametrize("key, value", [("keep_alive_s", "0"), ("keep_alive_s", "-1"), ("keep_alive_s", "nan"),
                                        ("max_connections", "-1"), ("body_timeout_s", "0"), ("send_timeout_s", "nan")])
async def test_bad_connection_keys_exit_2_naming_the_key(tmp_path, key, value):
    code, out = await run_cli("serve", "--data-dir", str(tmp_path / "d"), env={f"AMP_HTTP_{key.upper()}": value})
    assert code == 2 and f"http.{key}" in out and "Traceback" not in out, out


FD_LIMIT = 200  # the child's open-file soft limit: the default max_connections is sized from it


def lower_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))


async def test_more_idle_connections_than_descriptors_do_not_stop_a_new_client(nursery, tmp_path):
    # keep_alive_s far above the test's length: only the connection bound can make room.
    srv = await spawn_server(nursery, tmp_path / "data", env={"AMP_HTTP_KEEP_ALIVE_S": "600"},
                             preexec_fn=lower_fd_limit)
    idle: list[Raw] = []
    try:
        for _ in range(FD_LIMIT + 100):  # each one answered once, then left idle, as a pool leaves them
            with trio.fail_after(10):
                raw = await Raw.open(srv.url)
                idle.append(raw)
                await raw.send(request("GET", "/health"))
                status, _, _ = await raw.response()
            assert status == 200
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200
        with trio.fail_after(10):  # the longest idle made room: the server closed them
            await idle[0].wait_closed()
    finally:
        for raw in idle:
            await raw.aclose()
    log = srv.output.decode(errors="replace")
    assert "Too many open files" not in log, log


async def test_a_flood_past_max_connections_does_not_run_the_process_out_of_descriptors(nursery, tmp_path):
    """Every connection busy (bodies that never finish), then more newcomers than the process has
    descriptors, none of which closes: a few are answered 503, the rest closed at once, and
    once the busy ones go a new client is answered."""
    srv = await spawn_server(nursery, tmp_path / "data", env={"AMP_HTTP_MAX_CONNECTIONS": "20"},
                             preexec_fn=lower_fd_limit)
    busy = [await Raw.open(srv.url) for _ in range(20)]
    flood: list[Raw] = []
    try:
        for raw in busy:
            await raw.send(request("POST", "/task", body=TASK)[:-5])

        async def newcomer() -> None:
            try:
                raw = await Raw.open(srv.url)
            except OSError:  # the backlog overflowed: refused by the kernel is fine too
                return
            flood.append(raw)
            try:
                await raw.send(request("GET", "/health"))
                await raw.wait_closed()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        with trio.fail_after(30):
            async with trio.open_nursery() as newcomers:
                for _ in range(FD_LIMIT + 100):
                    newcomers.start_soon(newcomer)
        answered = [raw for raw in flood if raw.buffer.startswith(b"HTTP/1.1 503 ")]
        assert answered, "no newcomer was answered 503"
        for raw in busy:
            await raw.aclose()
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
            async def health_answered() -> bool:  # once the server has seen the busy ones close
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(health_answered, timeout=10)
    finally:
        for raw in [*busy, *flood]:
            await raw.aclose()
    log = srv.output.decode(errors="replace")
    assert "Too many open files" not in log, log[-3000:]


async def test_past_max_connections_with_every_one_busy_a_new_client_gets_503(server_factory):
    srv = await server_factory(http={"max_connections": 2})
    sleep = json.dumps({"function": "sleep", "input": {"ms": 1500}, "contract": 1}).encode()
    busy = [await Raw.open(srv.url) for _ in range(2)]
    try:
        for raw in busy:
            await raw.send(request("POST", "/task", body=sleep))
        await wait_until(lambda: srv.runtime.in_flight.count == 2)
        extra = await Raw.open(srv.url)
        try:
            await extra.send(request("GET", "/health"))
            with trio.fail_after(5):
                status, headers, body = await extra.response()
                await extra.wait_closed()
            assert status == 503 and json.loads(body)["error_code"] == "TOO_MANY_CONNECTIONS", body
            assert headers["retry-after"] == "1" and headers["connection"] == "close", headers
        finally:
            await extra.aclose()
        for raw in busy:  # the busy ones were not cut short
            with trio.fail_after(10):
                status, _, body = await raw.response()
            assert status == 200, body
        # Now idle: a new client takes the longest idle one's place.
        await wait_until(lambda: srv.runtime.in_flight.count == 0)
        fresh = await Raw.open(srv.url)
        try:
            await fresh.send(request("GET", "/health"))
            with trio.fail_after(5):
                assert (await fresh.response())[0] == 200
                await busy[0].wait_closed()
        finally:
            await fresh.aclose()
    finally:
        for raw in busy:
            await raw.aclose()


async def unread_connection(url: str) -> Raw:
    """A connection whose client takes in little (a 4 KiB receive buffer) until it reads."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(address(url))
    return Raw(trio.SocketStream(sock))


SLOW = {"max_connections": 4, "body_timeout_s": 1.0, "send_timeout_s": 1.0, "keep_alive_s": 600}
PIPELINED = 400  # answers asked for at once on a reader's connection: far more than socket buffers hold


async def test_clients_too_slow_to_send_a_body_or_to_read_an_answer_are_closed(server_factory):
    """Every place of max_connections held by a busy client that sends a body by the byte or
    never reads its answers: each is closed past its bound, and a new client is answered;
    a client that only waits for a slow answer is not cut."""
    srv = await server_factory(http=SLOW)
    waiting = await Raw.open(srv.url)
    senders = [await Raw.open(srv.url) for _ in range(2)]
    readers = [await unread_connection(srv.url) for _ in range(1)]
    try:
        slow_task = json.dumps({"function": "sleep", "input": {"ms": 2500}, "contract": 1}).encode()
        await waiting.send(request("POST", "/task", body=slow_task))
        for raw in senders:  # the headers and all of the body but its last bytes, then nothing
            await raw.send(request("POST", "/task", body=TASK)[:-5])
        for raw in readers:
            await raw.send(request("GET", "/openapi") * PIPELINED)
        with trio.fail_after(15):
            for raw in senders:
                await raw.wait_closed()
                assert not raw.buffer, raw.buffer[:200]  # nothing was answered: the body never came
            for raw in readers:
                await raw.wait_closed()
                assert raw.buffer.count(b"HTTP/1.1 200 ") < PIPELINED
            status, _, body = await waiting.response()  # waited 2.5 s for its answer, not cut
        assert status == 200 and json.loads(body)["status"] == "completed", body
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200
    finally:
        for raw in [waiting, *senders, *readers]:
            await raw.aclose()


async def test_a_client_reading_a_big_answer_slowly_but_steadily_is_not_cut(server_factory):
    """The bound is on reading nothing: a 300 kB answer taken 8 kB at a time, at ~100 kB/s, over
    several send_timeout_s, arrives whole."""
    srv = await server_factory(http={"send_timeout_s": 0.5, "keep_alive_s": 600})
    big = json.dumps({"function": "echo", "input": "x" * 300_000, "contract": 1}).encode()
    raw = await unread_connection(srv.url)
    try:
        await raw.send(request("POST", "/task", body=big))
        with trio.fail_after(30):
            while b"\r\n\r\n" not in raw.buffer or len(raw.buffer) < 300_000:
                chunk = await raw.stream.receive_some(8192)
                assert chunk, f"cut after {len(raw.buffer)} bytes"
                raw.buffer += chunk
                await trio.sleep(0.08)  # the client's pace: slow, never stopped
            status, _, body = await raw.response()
        assert status == 200 and json.loads(body)["result"] == "x" * 300_000
    finally:
        await raw.aclose()


async def test_over_http2_a_quick_request_does_not_reset_a_stalled_bodys_clock(server_factory):
    """Cleartext HTTP/2 answers several requests on one connection: each has its own clocks, so
    a /health beside a body that never finishes does not keep the connection."""
    import h2.config
    import h2.connection
    import h2.events

    srv = await server_factory(http={"body_timeout_s": 1.0, "keep_alive_s": 600})
    stream = await trio.open_tcp_stream(*address(srv.url))
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2conn.initiate_connection()
    head = [(":scheme", "http"), (":authority", "test")]
    h2conn.send_headers(1, [(":method", "POST"), (":path", "/tasks"), *head, ("content-length", "1000")])
    h2conn.send_data(1, b"[{")  # and no more
    await stream.send_all(h2conn.data_to_send())
    answered, closed = False, False
    try:
        with trio.fail_after(10):
            while not closed:
                data = await stream.receive_some(65536)
                if not data:
                    closed = True
                    break
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RemoteSettingsChanged) and not answered:
                        h2conn.send_headers(3, [(":method", "GET"), (":path", "/health"), *head], end_stream=True)
                    if isinstance(event, h2.events.StreamEnded) and event.stream_id == 3:
                        answered = True
                    if isinstance(event, h2.events.ConnectionTerminated):
                        closed = True
                await stream.send_all(h2conn.data_to_send())
    except trio.BrokenResourceError:
        closed = True
    finally:
        await stream.aclose()
    assert answered and closed


GRACE_S = 6.0


async def test_sigterm_closes_idle_connections_at_once_and_marks_in_flight_answers_close(nursery, tmp_path):
    srv = await spawn_server(nursery, tmp_path / "data", env={
        "AMP_SERVER_SHUTDOWN_GRACE_S": str(GRACE_S), "AMP_HTTP_KEEP_ALIVE_S": "600"})
    sleep = json.dumps({"function": "sleep", "input": {"ms": 4000}, "contract": 1}).encode()
    hot, routed, idle, silent = [await Raw.open(srv.url) for _ in range(4)]
    try:
        await hot.send(request("POST", "/task", body=sleep))  # the hot path
        await routed.send(request("POST", "/task", body=sleep, headers={"Idempotency-Key": "drain-1"}))  # Quart
        await idle.send(request("GET", "/health"))
        with trio.fail_after(5):
            assert (await idle.response())[0] == 200  # now an idle keep-alive connection; `silent` never asked
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
            await wait_until(lambda: busy_slots(client, 2))

        signalled = trio.current_time()
        srv.send_signal(signal.SIGTERM)
        with trio.fail_after(3):  # at once: before the in-flight tasks end
            await idle.wait_closed()
            await silent.wait_closed()
        assert not idle.buffer and not silent.buffer, (idle.buffer, silent.buffer)
        for raw in (hot, routed):
            with trio.fail_after(GRACE_S):
                status, headers, body = await raw.response()
                await raw.wait_closed()
            assert status == 200 and json.loads(body)["result"] == {"slept_ms": 4000}, body
            assert headers.get("connection") == "close", headers
        code = await srv.wait(timeout=GRACE_S + 10)
        took = trio.current_time() - signalled
        log = srv.output.decode(errors="replace")
        assert code == 0, log
        assert took <= GRACE_S + 2, f"exit took {took:.1f}s:\n{log}"
    finally:
        for raw in (hot, routed, idle, silent):
            await raw.aclose()


async def busy_slots(client: httpx.AsyncClient, at_least: int) -> bool:
    return (await client.get("/health")).json()["slots"]["busy"] >= at_least
