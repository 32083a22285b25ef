"""One-line log format with level and actor name, plus a ring of the most recent lines."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections import deque

from .secrets import mask_urls_in

actor_name: contextvars.ContextVar[str] = contextvars.ContextVar("actor_name", default="main")

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s [%(actor)s] %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class _ActorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.actor = actor_name.get()
        return True


class _MaskingFormatter(logging.Formatter):
    """Every line, the exception text included, without URL passwords (a webhook URL in an
    error message must not reach stderr or `GET /logs`)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_urls_in(super().format(record))


class LogRing(logging.Handler):
    """Keeps the last `size` formatted lines in memory for `GET /logs`."""

    def __init__(self, size: int = 1000):
        super().__init__()
        self.lines: deque[str] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a broken record must never take the process down
            self.handleError(record)

    def snapshot(self) -> list[str]:
        return list(self.lines)


def setup_logging(level: str = "info", ring_size: int = 1000, stream=None) -> LogRing:
    """Configure the `amp_runtime` logger tree; returns the ring handler."""
    import time

    formatter = _MaskingFormatter(FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime
    root = logging.getLogger("amp_runtime")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    console = logging.StreamHandler(stream or sys.stderr)
    ring = LogRing(ring_size)
    for handler in (console, ring):
        handler.setFormatter(formatter)
        handler.addFilter(_ActorFilter())
        root.addHandler(handler)
    return ring
