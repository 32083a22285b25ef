"""Templates only the tests use: registered when this module is imported (in-process servers)."""

from __future__ import annotations

import msgspec
import trio

import amp_runtime

# Attempts per flaky call, outside the durable state on purpose: retries must not reset it.
ATTEMPTS: dict[str, int] = {}


@amp_runtime.template("test-flaky")
class Flaky:
    calls: int = 0

    async def succeed_after(self, name: str, failures: int) -> int:
        ATTEMPTS[name] = ATTEMPTS.get(name, 0) + 1
        self.calls += 1  # rolled back with each failed attempt
        if ATTEMPTS[name] <= failures:
            raise RuntimeError(f"attempt {ATTEMPTS[name]} fails")
        return self.calls

    async def boom(self) -> None:
        raise ValueError("always")

    async def unworded(self) -> None:
        raise Unworded()

    async def halt(self, kind: str) -> None:
        """What user code may raise besides Exception: SystemExit, KeyboardInterrupt, ..."""
        if kind == "BadMessage":
            raise BadMessage()
        raise {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt,
               "GeneratorExit": GeneratorExit, "BaseException": BaseException}[kind]("halted")


class BadMessage(Exception):
    def __str__(self) -> str:  # its message raises what stops a program
        raise KeyboardInterrupt()


class Unworded(Exception):
    def __str__(self) -> str:  # an exception that cannot say what went wrong
        raise ValueError("no words for it")


class Size(msgspec.Struct):
    width: int
    height: int
    unit: str = "px"


@amp_runtime.template("test-typed")
class Typed:
    async def area(self, size: Size, scale: float = 1.0) -> float:
        return size.width * size.height * scale

    async def mix(self, n: int, s: str, xs: list[float], flag: bool = False) -> dict:
        return {"n": n, "s": s, "xs": xs, "flag": flag}

    async def echo_env(self) -> dict:
        return {"args": self.ctx.args, "env": self.ctx.env, "name": self.ctx.worker_name}


# Gates a test opens to let a `Gated.step` finish; STEPS logs starts and ends in order.
GATES: dict[str, "trio.Event"] = {}
STEPS: list[str] = []


@amp_runtime.template("test-gated")
class Gated:
    done: list[str]

    def __init__(self) -> None:
        self.done = []

    async def step(self, tag: str) -> list[str]:
        STEPS.append(f"start {tag}")
        self.done.append(tag)
        gate = GATES.get(tag)
        if gate is not None:
            await gate.wait()
        STEPS.append(f"end {tag}")
        return self.done
