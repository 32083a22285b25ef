"""A webhook receiver on 127.0.0.1:0 that keeps every call's raw headers and decoded body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve


@dataclass
class Receiver:
    url: str
    calls: list[tuple[list[tuple[str, str]], dict]] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    def bodies(self) -> list[dict]:
        return [body for _, body in self.calls]

    def by_task(self) -> dict[str, dict]:
        return {body["id"]: body for body in self.bodies()}

    async def wait_for(self, count: int, timeout: float = 15) -> None:
        with trio.fail_after(timeout):
            while len(self.by_task()) < count:
                await self.arrived.wait()
                self.arrived = trio.Event()


Handler = Callable[[dict, bytes], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]]


async def serve_http(nursery: trio.Nursery, handle: Handler) -> str:
    """An ASGI app on 127.0.0.1:0 handing each call's scope and whole body to `handle`, which
    returns the (status, headers, body) sent back. Returns the base URL."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, headers, content = await handle(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.loglevel = "WARNING"
    urls = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
    return urls[0]


async def serve_webhooks(nursery: trio.Nursery, answer: Callable[[dict, bytes], int]) -> str:
    """A receiver answering each call with the status `answer(scope, body)` returns, no body."""

    async def handle(scope, body: bytes):
        return answer(scope, body), [], b""

    return await serve_http(nursery, handle)


async def start_receiver(nursery: trio.Nursery) -> Receiver:
    receiver = Receiver("")

    def answer(scope, body: bytes) -> int:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        receiver.calls.append((headers, msgspec.json.decode(body)))
        receiver.arrived.set()
        return 200

    receiver.url = await serve_webhooks(nursery, answer) + "/hook"
    return receiver
