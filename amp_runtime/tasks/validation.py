"""Checks of a `POST /task` body that msgspec types alone cannot express. Pure.

Whatever an actor will later do with a value (send it as an HTTP header, resolve it as a host,
decode it into a function's input type) is checked here first: a bad value is a 400 at the door,
never a crash further in.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .models import TaskRequest
from .queue import MAX_PRIORITY
from .registry import FunctionSpec
from .webhooks import url_problems

MODES = ("sync", "stream", "webhook")
MAX_WEBHOOK_HEADERS = 64
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8192
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
# Framing and hop-by-hop headers belong to the sender's HTTP client, not to the request.
SENDER_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection", "te",
                            "upgrade", "trailer", "keep-alive", "proxy-connection"})


def task_problems(request: TaskRequest, spec: FunctionSpec, worker_ids,
                  max_id_length: int) -> list[str]:
    """Every problem with the request, so the client can fix them all at once."""
    problems = []
    if request.mode not in MODES:
        problems.append(f"mode: unknown mode {request.mode[:32]!r} (one of sync, stream, webhook)")
    if request.mode == "webhook":
        if request.webhook is None or not request.webhook.url:
            problems.append("webhook.url: required in webhook mode")
        else:
            problems.extend(url_problems(request.webhook.url))
    if request.webhook is not None:
        problems.extend(header_problems(request.webhook.headers))
    if request.mode == "stream" and not spec.streaming:
        problems.append(f"mode: function {spec.name!r} does not support streaming")
    if request.priority is not None and not 1 <= request.priority <= MAX_PRIORITY:
        problems.append(f"priority: must be between 1 and {MAX_PRIORITY}, got {request.priority}")
    if request.contract is None:
        problems.append("contract: required")
    elif request.contract != spec.contract:
        problems.append(f"contract: function {spec.name!r} has contract {spec.contract}, got {request.contract}")
    if request.group is not None and request.group != spec.group:
        problems.append(f"group: function {spec.name!r} is in group {spec.group!r}, "
                        f"not {request.group[:max_id_length]!r}")
    if request.worker is not None and request.worker not in worker_ids:
        problems.append(f"worker: no worker {request.worker[:max_id_length]!r}")
    return problems


def header_problems(headers: dict[str, str]) -> list[str]:
    """Names must be HTTP tokens, values printable latin-1 without CR/LF; counts and sizes bounded."""
    if len(headers) > MAX_WEBHOOK_HEADERS:
        return [f"webhook.headers: at most {MAX_WEBHOOK_HEADERS} headers, got {len(headers)}"]
    problems = []
    for name, value in headers.items():
        shown = repr(name[:64])
        if not name or len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
            problems.append(f"webhook.headers: name {shown} is not an HTTP token "
                            f"(ASCII letters, digits and !#$%&'*+-.^_`|~, 1 to {MAX_HEADER_NAME} characters)")
        elif name.lower() in SENDER_HEADERS:
            problems.append(f"webhook.headers: {shown} is set by the sender, not by a request")
        if len(value) > MAX_HEADER_VALUE:
            problems.append(f"webhook.headers.{name[:64]}: value longer than {MAX_HEADER_VALUE} characters")
        elif not all(" " <= ch <= "~" or "\xa0" <= ch <= "\xff" or ch == "\t" for ch in value):
            problems.append(f"webhook.headers.{name[:64]}: value must be printable latin-1 without CR or LF")
    return problems


def decode_input(spec: FunctionSpec, value: Any) -> tuple[Any, list[str]]:
    """The input as the function declared it (`spec.input_type`), or the problems with it.

    An omitted input (null) counts as an empty object for a typed function."""
    if spec.input_type is None:
        return value, []
    try:
        return msgspec.convert({} if value is None else value, spec.input_type), []
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$", "`$.input")
        if "`$.input" not in message:
            message += " - at `$.input`"
        return None, [f"input: {message}"]
