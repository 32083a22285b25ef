"""Request and response bodies of the Durable workers API, statuses, and the service's error."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# Worker statuses (exact spelling of the reference).
RUNNING = "Running"
IDLE = "Idle"
SUSPENDED = "Suspended"  # awaiting a promise
INTERRUPTED = "Interrupted"
RETRYING = "Retrying"
FAILED = "Failed"
EXITED = "Exited"  # in the reference's set; no built-in template exits


class WorkerError(Exception):
    """An expected failure with its HTTP status; 400s carry every problem found."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or [message]


# -- templates -----------------------------------------------------------------------
class FunctionParam(msgspec.Struct):
    name: str
    type: str


class FunctionInfo(msgspec.Struct):
    name: str
    params: list[FunctionParam]
    result: str


class TemplateInfo(msgspec.Struct):
    templateId: str
    name: str
    version: int
    functions: list[FunctionInfo]


# -- workers -------------------------------------------------------------------------
class WorkerId(msgspec.Struct):
    rawTemplateId: str
    workerName: str


class VersionedWorkerId(msgspec.Struct):
    workerId: WorkerId
    templateVersionUsed: int


class WorkerCreationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`env` as the reference's list of `[key, value]` pairs, or as an object."""

    name: str
    args: list[str] = []
    env: list[tuple[str, str]] | dict[str, str] = []


class WorkerMetadata(msgspec.Struct):
    workerId: WorkerId
    accountId: str
    args: list[str]
    env: dict[str, str]
    status: str
    templateVersion: int
    retryCount: int


class InvocationKey(msgspec.Struct):
    value: str


class InvokeParameters(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    params: list[Any] = []


class InvokeResult(msgspec.Struct):
    result: list[Any]


Byte = Annotated[int, msgspec.Meta(ge=0, le=255)]


class CompleteParameters(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    oplogIdx: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1, description="the promise id")]
    data: list[Byte] = []


class OplogEntry(msgspec.Struct):
    """One persisted event of a worker (ours, not in the reference)."""

    oplogIdx: int
    kind: str  # create, invoke, done, failed, retry, promise, complete, interrupt, resume
    detail: dict[str, Any]
    at: str


class Oplog(msgspec.Struct):
    entries: list[OplogEntry]


# -- query strings -------------------------------------------------------------------
class InvokeAndAwaitQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    invocation_key: str | None = msgspec.field(default=None, name="invocation-key")
    function: str | None = None
    calling_convention: Literal["component", "stdio"] = msgspec.field(
        default="component", name="calling-convention"
    )


class InvokeQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    function: str | None = None


class InterruptQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Both spellings: the reference's docs and its server differ."""

    recover_immediately: bool = msgspec.field(default=False, name="recover-immediately")
    recovery_immediately: bool = msgspec.field(default=False, name="recovery-immediately")
