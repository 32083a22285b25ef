"""Wording an exception raised by user code for an answer, without trusting anything it says
about itself: its `__str__` may raise anything (KeyboardInterrupt included), its class name may
be megabytes of control characters."""

from __future__ import annotations

MAX_NAME = 200  # characters of an exception's type name kept in answers and logs


def exception_name(exc: BaseException) -> str:
    """The exception's type name, printable and at most MAX_NAME characters."""
    try:
        name = type(exc).__name__
        if not isinstance(name, str):
            raise TypeError("not a string")
    except BaseException:
        return "<unnamed exception>"
    clean = "".join(c if c.isprintable() else "?" for c in name[:MAX_NAME])
    return clean + ("..." if len(name) > MAX_NAME else "") or "<unnamed exception>"


def exception_text(exc: BaseException) -> str:
    """`str(exc)`, or a stand-in when the exception cannot say it (its `__str__` raises, even a
    BaseException): wording a function's error must not break the code around the function."""
    try:
        text = str(exc)
        if isinstance(text, str):
            return text
    except BaseException:  # a __str__ raising KeyboardInterrupt must not stop the server
        pass
    return f"<{exception_name(exc)}: its message could not be read>"
