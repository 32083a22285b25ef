"""Checks of a `POST /task` body that msgspec types alone cannot express. Pure.

Whatever an actor will later do with a value (send it as an HTTP header, resolve it as a host,
decode it into a function's input type) is checked here first: a bad value is a 400 at the door,
never a crash further in.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..core import header_rules
from ..core.http import every_problem, key_path
from .models import TaskRequest
from .queue import MAX_PRIORITY
from .registry import FUNCTIONS, FunctionSpec
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
    """The input as the function declared it (`spec.input_type`), or every problem with it.

    An omitted input (null) counts as an empty object for a typed function."""
    if spec.input_type is None:
        return value, []
    value = {} if value is None else value
    try:
        return msgspec.convert(value, spec.input_type), []
    except msgspec.ValidationError as exc:
        # msgspec stops at the first problem: walk the type again for all of them (only now,
        # so a good input costs one conversion).
        problems = every_problem(value, spec.input_type, "$.input") or [f"{exc} - at `$.input`"]
        return None, [f"input: {problem}" for problem in problems]


def salvaged_request(plain: Any) -> tuple[TaskRequest | None, set[str]]:
    """From a body that failed to decode as a `TaskRequest`: a request of the fields that decode
    on their own, and the names of those that do not (their semantic checks are moot)."""
    if not isinstance(plain, dict):
        return None, set()
    fields, broken = {}, set()
    for info in msgspec.structs.fields(TaskRequest):
        if info.encode_name in plain:
            try:
                fields[info.name] = msgspec.convert(plain[info.encode_name], info.type)
            except msgspec.ValidationError:
                broken.add(info.encode_name)
    try:
        return TaskRequest(**fields), broken
    except TypeError:  # `function` is missing or broken: nothing to check against
        return None, broken


_FIELD = re.compile(r"[a-z_]*")  # the top-level field a problem of `task_problems` starts with


def salvaged_problems(plain: Any, worker_ids, max_id_length: int) -> list[str]:
    """The semantic problems of a body that failed to decode: those `task_problems` and
    `decode_input` find in the fields that do decode."""
    request, broken = salvaged_request(plain)
    spec = FUNCTIONS.get(request.function) if request is not None else None
    if spec is None:
        return []
    problems = [p for p in task_problems(request, spec, worker_ids, max_id_length)
                if _FIELD.match(p).group() not in broken]
    return problems + decode_input(spec, request.input)[1]

