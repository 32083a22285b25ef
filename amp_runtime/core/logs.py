"""Logging of the `amp_runtime` tree: text or JSON lines, to stderr or a file, plus a ring of
the most recent lines for `GET /logs`.

`[log] format = "json"` writes one object per line (time, level, logger, message, actor, and
`task_id` / `job_id` where the record concerns one: `extra=` or the `log_ids` context). `[log]
file` writes to a path instead of stderr through `WatchedFileHandler`, which reopens the path
when logrotate moves the file away. With either, other loggers' warnings (user functions,
libraries) go the same way. The ring keeps text lines either way.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import sys
import time
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import msgspec

from ..config import ConfigError

from .secrets import mask_urls_in

actor_name: contextvars.ContextVar[str] = contextvars.ContextVar("actor_name", default="main")
# The task or job the current code works for, inherited by the tasks it starts.
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("log_task_id", default=None)
job_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("log_job_id", default=None)

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s [%(actor)s] %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
FORMATS = ("text", "json")


@contextmanager
def log_ids(*, task_id: str | None = None, job_id: int | None = None) -> Iterator[None]:
    """Records logged inside name this task / job (never around a `yield` of a generator)."""
    tokens = [(var, var.set(value)) for var, value in ((task_id_var, task_id), (job_id_var, job_id))
              if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.actor = actor_name.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id_var.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes in `exc`, so a record stays one line. URL
    passwords are masked as in the text format."""

    _encode = msgspec.json.Encoder().encode

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_urls_in(record.getMessage()),
            "actor": getattr(record, "actor", None),
        }
        for key in ("task_id", "job_id"):
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = mask_urls_in(self.formatException(record.exc_info))
        return self._encode(line).decode()


class _MaskingFormatter(logging.Formatter):
    """Every line, the exception text included, without URL passwords (a webhook URL in an
    error message must not reach stderr or `GET /logs`)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_urls_in(super().format(record))


def _text_formatter() -> logging.Formatter:
    formatter = _MaskingFormatter(FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime
    return formatter


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


def _output(file: str, stream) -> logging.Handler:
    if not file:
        return logging.StreamHandler(stream or sys.stderr)
    try:
        return logging.handlers.WatchedFileHandler(file, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"log.file: cannot open {file}: {exc.strerror or exc}") from None


def setup_logging(level: str = "info", ring_size: int = 1000, stream=None, *, format: str = "text",
                  file: str = "") -> LogRing:
    """Configure the `amp_runtime` logger tree; returns the ring handler. Raises `ConfigError`
    when `file` cannot be opened."""
    output = _output(file, stream)
    root = logging.getLogger("amp_runtime")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, logging.FileHandler):
            handler.close()
    root.setLevel(level.upper())
    root.propagate = False
    ring = LogRing(ring_size)
    output.setFormatter(JsonFormatter() if format == "json" else _text_formatter())
    ring.setFormatter(_text_formatter())
    for handler in (output, ring):
        handler.addFilter(_ContextFilter())
        root.addHandler(handler)
    _route_other_loggers(output if format == "json" or file else None)
    return ring


class _OtherLoggers(logging.Handler):
    """On Python's root logger: other libraries' warnings go where ours go, in our format
    (else logging's last resort prints them to stderr as bare text)."""

    def __init__(self, output: logging.Handler):
        super().__init__(logging.WARNING)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        self.output.handle(record)


def _route_other_loggers(output: logging.Handler | None) -> None:
    python_root = logging.getLogger()
    for handler in [h for h in python_root.handlers if isinstance(h, _OtherLoggers)]:
        python_root.removeHandler(handler)
    if output is not None:
        python_root.addHandler(_OtherLoggers(output))
