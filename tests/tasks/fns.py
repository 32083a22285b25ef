"""Functions only the tests use: a gate that holds a slot until released, a slow one."""

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
