"""`Client`: the blocking twin of `AsyncClient`, for code without an event loop.

It is not a second implementation: each method runs `AsyncClient`'s on one trio loop in a thread
the client owns (anyio's blocking portal), so calls from many threads share one client's
connections, and its iterators are `AsyncClient`'s, read from the calling thread."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import anyio
import anyio.from_thread

from .aio import DEFAULT_URL, AsyncClient

ITEMS_BUFFER = 64  # items an iterator's loop side runs ahead of the reading thread
_CALLS = ("call", "submit", "get", "cancel", "create_job", "get_job", "job_progress", "stop_job",
          "create_worker", "invocation_key", "invoke", "workers", "worker")
_ITERATORS = ("stream", "map", "watch_job")


class Client:
    """`with Client(url, api_key=...) as client: client.call("echo", {...})`; the same methods,
    arguments and errors as `AsyncClient`, blocking. Safe to share between threads."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any):
        self._loop = anyio.from_thread.start_blocking_portal(backend="trio")
        self._portal = self._loop.__enter__()
        try:
            self._async = self._portal.call(_build, url, options)
        except BaseException:
            self._loop.__exit__(None, None, None)
            raise

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._portal is None:
            return
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._portal = None
            self._loop.__exit__(None, None, None)

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(functools.partial(getattr(self._async, method), *args, **kwargs))

    def _iterate(self, method: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Items of an `AsyncClient` iterator. Its loop side runs as one task (cancel scopes
        inside it stay in that task); leaving early cancels it, which closes its request."""
        portal = self._portal
        send, receive = anyio.create_memory_object_stream[tuple[bool, Any]](ITEMS_BUFFER)

        async def pump() -> None:
            async with send:
                try:
                    async for item in getattr(self._async, method)(*args, **kwargs):
                        await send.send((True, item))
                except anyio.BrokenResourceError:
                    pass  # the reader left
                except Exception as exc:
                    await send.send((False, exc))

        running = portal.start_task_soon(pump)
        try:
            while True:
                try:
                    ok, value = portal.call(receive.receive)
                except anyio.EndOfStream:
                    return
                if not ok:
                    raise value
                yield value
        finally:
            running.cancel()
            portal.call(receive.aclose)


async def _build(url: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(url, **options)


def _blocking(method: str, iterator: bool) -> Callable[..., Any]:
    wrapped = getattr(AsyncClient, method)

    @functools.wraps(wrapped)
    def blocking(self: Client, *args: Any, **kwargs: Any) -> Any:
        return (self._iterate if iterator else self._run)(method, *args, **kwargs)

    return blocking


for _name in _CALLS:
    setattr(Client, _name, _blocking(_name, iterator=False))
for _name in _ITERATORS:
    setattr(Client, _name, _blocking(_name, iterator=True))
