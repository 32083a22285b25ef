"""The floor under every HTTP figure: a bare ASGI callable on hypercorn (trio), msgspec in and out.

Run: python -m amp_runtime.bench.bare_asgi  (prints its URL, serves until killed). It lives in
the package so `amp-runtime bench --compare` can start it from an installed wheel.
"""

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve


class Request(msgspec.Struct):
    function: str
    input: object = None


class Answer(msgspec.Struct):
    function: str
    status: str = "noop"


decode = msgspec.json.Decoder(Request).decode
encode = msgspec.json.Encoder().encode


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    data = encode(Answer(decode(body).function))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def main() -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
        print(f"listening on {urls[0]} (data: none)", flush=True)


if __name__ == "__main__":
    trio.run(main)
