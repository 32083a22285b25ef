"""A webhook receiver on 127.0.0.1:0 that keeps every call's raw headers and decoded body."""

from __future__ import annotations

from dataclasses import dataclass, field

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


async def start_receiver(nursery: trio.Nursery) -> Receiver:
    receiver = Receiver("")

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
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        receiver.calls.append((headers, msgspec.json.decode(body)))
        receiver.arrived.set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    urls = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
    receiver.url = urls[0] + "/hook"
    return receiver
