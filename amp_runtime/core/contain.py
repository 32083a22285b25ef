"""Containing what user code raises: everything but a cancellation is the code's own failure.

A function may raise any `BaseException` (argparse raises `SystemExit`, a library
`KeyboardInterrupt`, a generator `GeneratorExit`): each fails its task, invocation or job only.
A trio `Cancelled` (or a group of nothing else) belongs to a cancel scope of ours and goes on.
"""

from __future__ import annotations

import trio


def is_cancellation(exc: BaseException) -> bool:
    """True for `trio.Cancelled`, or an exception group holding only cancellations."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)
