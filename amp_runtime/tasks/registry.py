"""The `@amp_runtime.function` decorator and the table of functions it fills."""

from __future__ import annotations

import dis
import importlib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

import msgspec


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    group: str
    contract: int
    streaming: bool
    timeout_s: float | None
    fn: Callable[..., Any]
    kind: str  # "async", "stream" (async generator), "thread" or "process" (plain def)
    input_type: Any = None  # a msgspec.Struct the input is decoded into at admission; None: any JSON
    suspends: bool = True  # False: an `async def` with no await point (see `may_suspend`)


FUNCTIONS: dict[str, FunctionSpec] = {}


def function(
    name: str | None = None,
    *,
    group: str = "default",
    contract: int = 1,
    streaming: bool | None = None,
    timeout_s: float | None = None,
    run: str = "thread",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a task function. `async def` runs on trio, an async generator streams, a plain
    `def` runs in a worker thread, or with `run="process"` in the runtime's pool of worker
    processes (CPU-bound work; a timeout or cancel kills the process). The function receives
    the task's `input`; when its parameter is annotated with a `msgspec.Struct`, the input is
    decoded into it (and checked) at admission.

    A `run="process"` function is sent to the worker process by name, so it must be defined at
    the top level of a module the worker process can import (not a lambda, not nested), and
    its input and result must pickle."""
    if run not in ("thread", "process"):
        raise ValueError(f"run must be 'thread' or 'process', not {run!r}")
    if timeout_s is not None and not timeout_s > 0:  # a task must get a chance to start (also NaN)
        raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(fn):
            kind = "stream"
        elif inspect.iscoroutinefunction(fn):
            kind = "async"
        else:
            kind = run
        if run == "process":
            _check_importable(fn)
        is_streaming = kind == "stream" if streaming is None else streaming
        if is_streaming and kind != "stream":
            raise TypeError(f"function {fn.__name__}: streaming=True needs an async generator")
        spec = FunctionSpec(
            name=name or fn.__name__,
            group=group,
            contract=contract,
            streaming=is_streaming,
            timeout_s=timeout_s,
            fn=fn,
            kind=kind,
            input_type=declared_input(fn),
            suspends=kind != "async" or may_suspend(fn),
        )
        FUNCTIONS[spec.name] = spec
        return fn

    return register


# What a coroutine's code compiles an `await`, `async with` or `async for` into (3.10-3.13).
_SUSPENDING_OPS = frozenset({
    "YIELD_VALUE", "YIELD_FROM", "SEND", "GET_AWAITABLE", "BEFORE_ASYNC_WITH", "GET_AITER", "GET_ANEXT",
    "END_ASYNC_FOR",
})


def may_suspend(fn: Callable[..., Any]) -> bool:
    """False only for an `async def` whose own code has no await point. Its coroutine runs to its
    end in one step, so no cancel scope around it could ever fire: its task runs without one
    (~5 us, a sixth of an echo task's CPU). Anything else -- a wrapper, a callable object, a
    function whose code awaits -- may suspend."""
    code = getattr(fn, "__code__", None) if type(fn) is types.FunctionType else None
    if code is None or not code.co_flags & inspect.CO_COROUTINE:
        return True
    return any(instruction.opname in _SUSPENDING_OPS for instruction in dis.get_instructions(code))


def declared_input(fn: Callable[..., Any]) -> Any:
    """The `msgspec.Struct` a function's first parameter is annotated with, else None."""
    try:
        first = next(iter(inspect.signature(fn).parameters.values()), None)
        hint = typing.get_type_hints(fn).get(first.name) if first is not None else None
    except (TypeError, ValueError, NameError):
        return None
    return hint if isinstance(hint, type) and issubclass(hint, msgspec.Struct) else None


def _check_importable(fn: Callable[..., Any]) -> None:
    """A worker process finds a function by module and name; refuse what it could not find."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"function {fn.__name__}: run='process' needs a plain def")
    qualname = getattr(fn, "__qualname__", "")
    if "<" in qualname or not getattr(fn, "__module__", None):
        raise TypeError(f"function {qualname or fn!r}: run='process' needs a function defined at the "
                        "top level of an importable module (not a lambda or a nested def)")


def preload(module: str | None) -> None:
    """Runs in a new worker process: import a `run="process"` function's module ahead of its task."""
    if module:
        importlib.import_module(module)
