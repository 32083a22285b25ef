"""Containing what user code raises: everything but a cancellation is the code's own failure.

A function may raise any `BaseException` (argparse raises `SystemExit`, a library
`KeyboardInterrupt`, a generator `GeneratorExit`): each fails its task, invocation or job only.
A trio `Cancelled` (or a group of nothing else) belongs to a cancel scope of ours and goes on.
"""

from __future__ import annotations

import math

import trio


def is_cancellation(exc: BaseException) -> bool:
    """True for `trio.Cancelled`, or an exception group holding only cancellations."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


def is_our_cancellation(exc: BaseException) -> bool:
    """A cancellation (`is_cancellation`) while the current task is cancelled, i.e. one a cancel
    scope of ours delivered. A function that raises `trio.Cancelled` itself while nothing cancelled
    it fails its task instead of passing for ours (and stopping its worker)."""
    return is_cancellation(exc) and trio.current_effective_deadline() == -math.inf
