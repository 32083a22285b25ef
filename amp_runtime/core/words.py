"""Wording an exception raised by user code for an answer, without trusting its `__str__`."""

from __future__ import annotations


def exception_text(exc: BaseException) -> str:
    """`str(exc)`, or a stand-in when the exception cannot say it (its `__str__` raises):
    wording a function's error must not break the code around the function."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: its message could not be read>"
