"""Functions that raise what user code may raise, in every run kind, and end or hold their
process: for the containment tests. Spawned servers load this module by name."""

from __future__ import annotations

import os
import threading
import time

import trio

import amp_runtime


class Custom(BaseException):
    """A BaseException of the user's own, neither Exception nor one of Python's."""


RAISES: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt, "GeneratorExit": GeneratorExit,
    "BaseException": BaseException, "Custom": Custom,
}


class BadMessage(Exception):
    """An ordinary exception whose message raises what stops a program."""

    def __str__(self) -> str:
        raise KeyboardInterrupt()


class BadBase(BaseException):
    """Neither its message nor its repr can be had: each raises the exception itself."""

    def __str__(self) -> str:
        raise BadBase()

    def __repr__(self) -> str:
        raise BadBase()


class WeirdName(Exception):
    pass


WeirdName.__name__ = "x\n\u2028\x1b[31m" * 1000  # a name that would forge log lines

# What hostile user code raises: (name, the exception).
HOSTILE = {
    "BadMessage": lambda: BadMessage(),
    "BadBase": lambda: BadBase(),
    "WeirdName": lambda: WeirdName("weird"),
    "Cancelled": lambda: trio.Cancelled._create(),  # raised by the function, nothing cancelled it
}


def _raise(input: dict) -> None:
    if input["raise"] in HOSTILE:
        raise HOSTILE[input["raise"]]()
    raise RAISES[input["raise"]](input.get("message", "raised by the function"))


@amp_runtime.function(name="raise_async")
async def raise_async(input: dict) -> None:
    await trio.sleep(0)
    _raise(input)


@amp_runtime.function(name="raise_now")
async def raise_now(input: dict) -> None:
    """No await point: run at once in its request."""
    _raise(input)


@amp_runtime.function(name="raise_thread")
def raise_thread(input: dict) -> None:
    _raise(input)


@amp_runtime.function(name="raise_process", run="process")
def raise_process(input: dict) -> None:
    _raise(input)


@amp_runtime.function(name="raise_stream", streaming=True)
async def raise_stream(input: dict):
    yield {"before": True}
    await trio.sleep(0)
    _raise(input)


@amp_runtime.function(name="end_process")
def end_process(input: dict) -> None:
    """Ends the whole process at once, as a crashing C extension or `os._exit` in user code does."""
    os._exit(int(input.get("code", 1)))


@amp_runtime.function(name="echo_later")
async def echo_later(input: dict) -> dict:
    await trio.sleep(0)
    return input


# Threads of `hold_thread` running now, and the most that ever ran at once (in-process tests).
_lock = threading.Lock()
HOLDING = [0]
PEAK = [0]


@amp_runtime.function(name="hold_thread", timeout_s=0.3)
def hold_thread(input: dict) -> str:
    """Holds its thread, ignoring its timeout, until the file `release` exists (bounded: 60 s).
    With `runs`, a line is added to that file at each run."""
    if "runs" in input:
        with open(input["runs"], "a") as runs:
            runs.write("ran\n")
    with _lock:
        HOLDING[0] += 1
        PEAK[0] = max(PEAK[0], HOLDING[0])
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(input["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "released"
    finally:
        with _lock:
            HOLDING[0] -= 1


@amp_runtime.function(name="hold_until_released", timeout_s=60)
async def hold_until_released(input: dict) -> str:
    """Runs until the file `release` exists, adding a line to the file `runs` when it starts."""
    with open(input["runs"], "a") as runs:
        runs.write("ran\n")
    while not os.path.exists(input["release"]):
        await trio.sleep(0.01)
    return "released"
