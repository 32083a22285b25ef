"""Checks of a `POST /task` body that msgspec types alone cannot express. Pure."""

from __future__ import annotations

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
        problems.append(f"mode: unknown mode {request.mode!r} (one of sync, stream, webhook)")
    if request.mode == "webhook":
        if request.webhook is None or not request.webhook.url:
            problems.append("webhook.url: required in webhook mode")
        else:
            problems.extend(url_problems(request.webhook.url))
    if request.mode == "stream" and not spec.streaming:
        problems.append(f"mode: function {spec.name!r} does not support streaming")
    if request.priority is not None and not 1 <= request.priority <= MAX_PRIORITY:
        problems.append(f"priority: must be between 1 and {MAX_PRIORITY}, got {request.priority}")
    if request.contract is None:
        problems.append("contract: required")
    elif request.contract != spec.contract:
        problems.append(f"contract: function {spec.name!r} has contract {spec.contract}, got {request.contract}")
    if request.group is not None and request.group != spec.group:
        problems.append(f"group: function {spec.name!r} is in group {spec.group!r}, not {request.group!r}")
    if request.worker is not None and request.worker not in worker_ids:
        problems.append(f"worker: no worker {request.worker[:max_id_length]!r}")
    return problems
