"""The client's protocol, without I/O: request bodies, what an answer means, when to retry.

`AsyncClient` and `Client` send what this module builds and hand it what came back, so the two
differ only in how they wait (as httpx's own sync and async clients do)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import msgspec

from .errors import Rejected, TaskCancelled, TaskFailed, TaskTimedOut, Unavailable

CONTRACT = 1
RETRY_STATUSES = (429, 503)
MAX_RETRY_WAIT_S = 30.0  # a Retry-After beyond this is cut to it: a caller's retries stay bounded
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Item:
    """One result of `map`, in the order the tasks finished: `.index` into the inputs, and
    `.result` or `.error` (a `TaskFailed`, `Rejected` or `Unavailable`)."""

    index: int
    id: str | None
    result: Any = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def new_key() -> str:
    """An idempotency key: a retry with it is the same task, never a second run."""
    return uuid.uuid4().hex


def task_body(function: str, input: Any, *, mode: str = "sync", priority: int | None = None,
              group: str | None = None, worker: str | None = None, webhook: dict | None = None,
              idempotency_key: str | None = None, contract: int = CONTRACT) -> dict[str, Any]:
    """A `POST /task` body (or a `POST /tasks` item, with `idempotency_key`). A msgspec Struct
    input is encoded as msgspec encodes it."""
    body: dict[str, Any] = {"function": function, "input": {} if input is None else input, "contract": contract}
    if mode != "sync":
        body["mode"] = mode
    for name, value in (("priority", priority), ("group", group), ("worker", worker), ("webhook", webhook),
                        ("idempotency_key", idempotency_key)):
        if value is not None:
            body[name] = value
    return body


def encode(body: Any) -> bytes:
    return _encode(body)


def retry_wait(status: int, headers: Any, attempt: int) -> float | None:
    """Seconds to wait before retrying an answer with this status, or None: not to be retried."""
    if status not in RETRY_STATUSES:
        return None
    try:
        wait = float(headers.get("retry-after", ""))
    except ValueError:
        wait = min(MAX_RETRY_WAIT_S, 0.1 * 2 ** attempt)
    return max(0.0, min(wait, MAX_RETRY_WAIT_S))


def decode(content: bytes) -> Any:
    try:
        return msgspec.json.decode(content) if content else None
    except msgspec.DecodeError:
        return None


def refusal(status: int, content: bytes, headers: Any = None) -> Exception:
    """The error for an answer that is not a task's outcome (a 4xx/5xx of admission)."""
    body = decode(content)
    code, problems = f"HTTP_{status}", [content.decode("utf-8", "replace")[:500] or f"HTTP {status}"]
    if isinstance(body, dict):
        code = body.get("error_code") or code
        if isinstance(body.get("errors"), list):  # the durable family's 400
            problems = [str(p) for p in body["errors"]]
        elif isinstance(body.get("problems"), list):
            problems = [str(p) for p in body["problems"]]
        elif "error_message" in body or "error" in body:
            problems = [str(body.get("error_message") or body.get("error"))]
    if status in RETRY_STATUSES:
        retry_after = retry_wait(status, headers or {}, 0)
        return Unavailable(status, code, "; ".join(problems), retry_after=retry_after)
    return Rejected(status, code, problems)


def task_error(outcome: dict) -> TaskFailed:
    error = outcome.get("error") or {}
    kind = {"timed_out": TaskTimedOut, "cancelled": TaskCancelled}.get(outcome.get("status"), TaskFailed)
    return kind(error.get("type", "Unknown"), error.get("message", ""), task_id=outcome.get("id"),
                traceback=error.get("traceback"))


def outcome(status: int, content: bytes, headers: Any = None, result_type: Any = None) -> Any:
    """The result of a sync task from its answer, or the error it stands for."""
    body = decode(content)
    if isinstance(body, dict) and "status" in body and "success" in body:
        if body["success"]:
            return convert(body.get("result"), result_type)
        raise task_error(body)
    raise refusal(status, content, headers)


def convert(value: Any, result_type: Any) -> Any:
    """`value` as `result_type` (a msgspec Struct, a dataclass, list[int], ...); as is when None."""
    if result_type is None:
        return value
    try:
        return msgspec.convert(value, result_type)
    except msgspec.ValidationError as exc:
        raise Rejected(200, "RESULT_TYPE", [f"the result does not fit {result_type!r}: {exc}"]) from None


class SSE:
    """Server-sent events from lines: feed each line, get (event, data) when one is complete."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            event, data = self._event, "\n".join(self._data)
            self._event, self._data = "message", []
            return event, data
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def stream_event(event: str, data: str, result_type: Any = None) -> tuple[bool, Any]:
    """(done, item) for one event of a stream task: an item, or the end (raises for `error`)."""
    if event == "message":
        return False, convert(msgspec.json.decode(data), result_type)
    body = msgspec.json.decode(data)
    if event == "error" or not body.get("success", True):
        raise task_error(body)
    return True, None


def batch_item(line: bytes, result_type: Any = None) -> Item:
    """An `Item` from one NDJSON line of `POST /tasks`."""
    body = msgspec.json.decode(line)
    index = body["index"]
    if body.get("status") == "rejected":
        http_status = body.get("http_status", 400)
        problems = body.get("problems") or [(body.get("error") or {}).get("message", "rejected")]
        error: Exception = (Unavailable(http_status, "REJECTED", "; ".join(problems)) if http_status in RETRY_STATUSES
                            else Rejected(http_status, "REJECTED", problems))
        return Item(index, body.get("id"), error=error)
    if body.get("success"):
        try:
            return Item(index, body.get("id"), result=convert(body.get("result"), result_type))
        except Rejected as exc:
            return Item(index, body.get("id"), error=exc)
    return Item(index, body.get("id"), error=task_error(body))


def batch_body(function: str, inputs: Iterable[Any], keys: list[str], **options: Any) -> bytes:
    """NDJSON items of `POST /tasks`, one per input, each with its idempotency key."""
    return b"\n".join(encode(task_body(function, value, idempotency_key=key, **options))
                      for value, key in zip(inputs, keys))


class Lines:
    """Complete NDJSON lines from byte chunks: feed each chunk, get the lines it completed."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        return [line for line in complete if line.strip()]

    def end(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest.strip() else []
