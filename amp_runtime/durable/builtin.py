"""Built-in templates used by the tests and the docs: counter, kv and approval."""

from __future__ import annotations

from typing import Any

from .templates import template


@template("counter")
class Counter:
    """A number that only `add` changes."""

    value: int = 0

    async def add(self, n: int) -> int:
        self.value += n
        return self.value

    async def get(self) -> int:
        return self.value


@template("kv")
class KeyValue:
    """A string-keyed map of JSON values; `get` of a missing key is null."""

    items: dict[str, Any]

    def __init__(self) -> None:
        self.items = {}

    async def put(self, k: str, v: Any) -> None:
        self.items[k] = v

    async def get(self, k: str) -> Any:
        return self.items.get(k)


@template("approval")
class Approval:
    """`request(msg)` waits for someone to complete its promise and returns the data sent.

    The promise id is the oplog index of the "promise" entry (`GET .../oplog`).
    """

    approved: int = 0

    async def request(self, msg: str) -> list[int]:
        promise_id = await self.ctx.create_promise()
        data = await self.ctx.await_promise(promise_id)
        self.approved += 1
        return list(data)
