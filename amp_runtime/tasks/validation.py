"""Checks of a `POST /task` body that msgspec types alone cannot express. Pure.

Whatever an actor will later do with a value (send it as an HTTP header, resolve it as a host,
decode it into a function's input type) is checked here first: a bad value is a 400 at the door,
never a crash further in.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..core import header_rules
from ..core.http import key_path
from .models import TaskRequest
from .queue import MAX_PRIORITY
from .registry import FunctionSpec
from .webhooks import url_problems

MODES = ("sync", "stream", "webhook")


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
    """Every problem of a request's `webhook.headers`, by the rules of the HTTP library that
    sends them (`core.header_rules`), each with its JSON path."""
    path = "$.webhook.headers"
    return [f"webhook.headers: {problem} - at `{path if name is None else key_path(path, name[:64])}`"
            for name, problem in header_rules.header_problems(headers)]


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
