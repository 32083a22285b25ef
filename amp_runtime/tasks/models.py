"""Request and response bodies of the tasks API (the same structs build /openapi)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from ..core.secrets import masked_url

from .queue import MAX_PRIORITY

Priority = Annotated[int, msgspec.Meta(ge=1, le=MAX_PRIORITY, description="lower runs first")]
Contract = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class Webhook(msgspec.Struct, kw_only=True):
    url: str = ""
    headers: dict[str, str] = {}


class TaskRequest(msgspec.Struct, kw_only=True):
    """`POST /task`. Unknown fields are ignored; semantic problems are listed together."""

    function: str
    input: Any = None
    contract: Contract | None = None
    group: str | None = None
    priority: Priority | None = None
    mode: str = "sync"
    webhook: Webhook | None = None
    worker: str | None = None


def _result_if_completed(body: Any) -> None:
    """A completed task's body always has `result` (null for None); the others have none: the
    spec's `"result" | "error"`."""
    if body.status != "completed":
        body.result = msgspec.UNSET
    elif body.result is msgspec.UNSET:
        body.result = None


class TaskError(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    message: str
    traceback: str | None = None


class TaskResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The outcome of a sync task (200 completed, 500 failed, 504 timed out, 409 cancelled)
    and the body of a webhook delivery."""

    id: str
    status: str
    success: bool
    result: Any | msgspec.UnsetType = msgspec.UNSET
    error: TaskError | None = None
    duration_ms: float | None = None

    __post_init__ = _result_if_completed


class TaskAccepted(msgspec.Struct, kw_only=True):
    """202 for webhook mode: accepted, nothing ran yet."""

    id: str
    status: str = "queued"


class Delivery(msgspec.Struct, kw_only=True, omit_defaults=True):
    attempt: int
    at: str
    status_code: int | None = None
    error: str | None = None


class TaskView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`GET /tasks/{id}`."""

    id: str
    function: str
    mode: str
    worker: str
    status: str
    success: bool
    priority: int | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    result: Any | msgspec.UnsetType = msgspec.UNSET
    error: TaskError | None = None
    webhook_url: str | None = None
    webhook_status: str | None = None  # pending, delivered, failed
    deliveries: list[Delivery] = []

    __post_init__ = _result_if_completed


def masked_view(view: TaskView | None) -> TaskView | None:
    """The view fit for an answer: the webhook URL's password is ***."""
    if view is None or not view.webhook_url:
        return view
    return msgspec.structs.replace(view, webhook_url=masked_url(view.webhook_url))


class Slots(msgspec.Struct):
    total: int
    busy: int
    free: int
    abandoned: int = 0  # of the busy ones: threads of settled tasks (cancelled, timed out) still running


class WorkerHealth(msgspec.Struct, kw_only=True):
    id: str
    slots: Slots
    queued: int
    max_queue: int
    groups: list[str]
    tags: list[str]
    maintenance: bool


class FunctionInfo(msgspec.Struct, kw_only=True):
    name: str
    group: str
    contract: int
    streaming: bool


class Build(msgspec.Struct):
    """The running build: `build_date` is null when run from a checkout (not a built wheel)."""

    version: str
    commit_sha: str
    commit_timestamp: str | None
    build_date: str | None


class StoreHealth(msgspec.Struct, omit_defaults=True):
    """`available`, or `unavailable` with the reason."""

    state: str
    reason: str | None = None


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Public part: status, slots, queued. With a valid key: the rest."""

    status: str
    slots: Slots
    queued: int
    version: str | None = None
    build: Build | None = None
    uptime_s: float | None = None
    tags: dict[str, str] | None = None
    functions: list[FunctionInfo] | None = None
    workers: list[WorkerHealth] | None = None
    store: StoreHealth | None = None


class Logs(msgspec.Struct):
    logs: list[str]


class Maintenance(msgspec.Struct):
    status: str
    maintenance: bool


class SlotState(msgspec.Struct):
    """What `/ws/slots` pushes for one worker."""

    worker: str
    free: int
    total: int
    queued: int
    maintenance: bool
