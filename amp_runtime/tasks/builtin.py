"""Built-in functions used by tests, docs and benchmarks.

Most declare their input as a `msgspec.Struct`: it is decoded and checked at admission (a wrong
shape is a 400 naming the field) and documented in /openapi. `echo` and `hash_sync` take any JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import trio

from .registry import function


class HelloInput(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=1000)] = "world"


class SleepInput(msgspec.Struct, kw_only=True):
    ms: Annotated[float, msgspec.Meta(ge=0, le=3_600_000)] = 0


class CountInput(msgspec.Struct, kw_only=True):
    n: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 10
    delay_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 0


class FailInput(msgspec.Struct, kw_only=True):
    message: Annotated[str, msgspec.Meta(max_length=10_000)] = "failed on purpose"


@function(name="hello")
async def hello(input: HelloInput) -> str:
    return f"Hello, {input.name}!"


@function(name="echo")
async def echo(input: Any) -> Any:
    return input


@function(name="sleep")
async def sleep(input: SleepInput) -> dict:
    await trio.sleep(input.ms / 1000.0)
    return {"slept_ms": input.ms}


@function(name="count", streaming=True)
async def count(input: CountInput):
    delay = input.delay_ms / 1000.0
    for i in range(input.n):
        if delay and i:
            await trio.sleep(delay)
        yield {"i": i}


@function(name="fail")
async def fail(input: FailInput) -> None:
    raise RuntimeError(input.message)


@function(name="hash_sync")
def hash_sync(input: dict) -> str:
    """A plain `def`: runs in a worker thread."""
    import hashlib

    return hashlib.sha256(str(input.get("data", "")).encode()).hexdigest()


def burn(input: dict) -> int:
    """Pure-Python CPU work: `n` rounds of integer arithmetic (n=250_000 is ~15 ms)."""
    n = int(input.get("n", 250_000))
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


# The same CPU-bound function on both kinds of slot, so benchmarks can compare them.
function(name="cpu_burn")(burn)
function(name="cpu_burn_process", run="process")(burn)
