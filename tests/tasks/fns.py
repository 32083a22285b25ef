"""Functions only the tests use: a gate that holds a slot until released, a slow one."""

from typing import Annotated

import msgspec
import trio

import amp_runtime

GATES: dict[str, trio.Event] = {}
STARTED: list[str] = []


def gate(name: str) -> trio.Event:
    return GATES.setdefault(name, trio.Event())


@amp_runtime.function(name="test_gate")
async def wait_at_gate(input: dict) -> str:
    STARTED.append(input.get("tag", ""))
    await gate(input["gate"]).wait()
    return input.get("tag", "")


@amp_runtime.function(name="test_no_await")
async def no_await(input: dict) -> dict:
    """No await point: it runs without a cancel scope (registry.may_suspend)."""
    if input["n"] < 0:
        raise ValueError("n must not be negative")
    return {"n": input["n"], "twice": 2 * input["n"]}


class Unwordable(Exception):
    def __str__(self) -> str:
        raise ValueError("no words for it")


@amp_runtime.function(name="test_unwordable")
async def unwordable(input: dict) -> None:
    """No await point; its error's `str()` raises."""
    raise Unwordable()


class Halt(BaseException):
    """Stands for SystemExit / KeyboardInterrupt raised by a function."""


@amp_runtime.function(name="test_halt")
async def halt(input: dict) -> None:
    raise Halt()


@amp_runtime.function(name="test_no_param")
async def no_param() -> int:  # called with the task's input: a TypeError, as for any wrong signature
    return 1


@amp_runtime.function(name="test_slow", timeout_s=0.2)
async def slow(input: dict) -> None:
    await trio.sleep(30)


@amp_runtime.function(name="test_endless", streaming=True)
async def endless(input: dict):
    i = 0
    while True:
        yield {"i": i}
        i += 1
        await trio.sleep(0.01)


class ResizeInput(msgspec.Struct, kw_only=True):
    """A typed input: decoded and checked at admission, documented in /openapi."""

    width: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    height: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    keep_ratio: bool = True


@amp_runtime.function(name="test_resize")
async def resize(input: ResizeInput) -> dict:
    return {"area": input.width * input.height, "typed": isinstance(input, ResizeInput)}


@amp_runtime.function(name="test_gated_stream", streaming=True)
async def gated_stream(input: dict):
    yield {"open": True}
    await gate(input["gate"]).wait()


@amp_runtime.function(name="test_not_json")
async def not_json(input: dict) -> object:
    return {"set": {1, 2}} if input.get("almost") else object()


@amp_runtime.function(name="test_stubborn", timeout_s=0.2)
async def stubborn(input: dict) -> None:
    with trio.CancelScope(shield=True):  # a clean-up that outlives the deadline
        await trio.sleep(input["s"])
    await trio.lowlevel.checkpoint()


class Area(msgspec.Struct, omit_defaults=True):
    area: int
    unit: str = "px"
    note: str | None = None


@amp_runtime.function(name="test_typed_result")
async def typed_result(input: dict) -> Area:
    return Area(area=input.get("area", 1), note=input.get("note"))


@amp_runtime.function(name="test_stream_not_json", streaming=True)
async def stream_not_json(input: dict):
    yield {"ok": 1}
    yield object()


@amp_runtime.function(name="test_slow_thread", timeout_s=0.2)
def slow_thread(input: dict) -> None:
    import time

    time.sleep(input.get("s", 3))


@amp_runtime.function(name="test_none")
async def returns_none(input: dict) -> None:
    """Returns None after an await point (through a slot, not `run_now`)."""
    await trio.lowlevel.checkpoint()
