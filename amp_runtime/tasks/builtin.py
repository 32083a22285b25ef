"""Built-in functions used by tests, docs and benchmarks."""

from __future__ import annotations

from typing import Any

import trio

from .registry import function


@function(name="hello")
async def hello(input: dict) -> str:
    return f"Hello, {input.get('name', 'world')}!"


@function(name="echo")
async def echo(input: Any) -> Any:
    return input


@function(name="sleep")
async def sleep(input: dict) -> dict:
    ms = float(input.get("ms", 0))
    await trio.sleep(ms / 1000.0)
    return {"slept_ms": ms}


@function(name="count", streaming=True)
async def count(input: dict):
    n = int(input.get("n", 10))
    delay = float(input.get("delay_ms", 0)) / 1000.0
    for i in range(n):
        if delay and i:
            await trio.sleep(delay)
        yield {"i": i}


@function(name="fail")
async def fail(input: dict) -> None:
    raise RuntimeError(input.get("message", "failed on purpose"))


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
