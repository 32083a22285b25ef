"""Batch submission (`POST /tasks`): many task requests in one body, one line per task as it finishes.

Each item meets the admission of a single `POST /task` -- `TaskService.submit`, or for a sync item
no node forwards `TaskService.admit_sync`, the same checks without awaiting -- so it gets the same
checks, priorities and queue limits. The items run in one nursery owned by the generator the
response streams: when the client leaves, the response's `aclose` cancels the nursery and withdraws
the queued items, and every unfinished item gives its queue place or slot back at once. An item
with an `idempotency_key` goes through `submit` with it, as a `POST /task` with the header does.
"""

from __future__ import annotations

import heapq
import logging
import math
from functools import partial
from typing import Annotated, Any, AsyncIterator

import msgspec
import trio

from ..core.http import ApiError, decode_body, json_depth_exceeds, require_utf8
from .errors import Rejected, WorkerFailed
from .idempotency import Replayed, check_key
from .models import TaskAccepted, TaskError, TaskRequest, TaskResult
from .outcomes import OUTCOME_STATUS, Forwarded, SyncOutcome
from .worker import Task, new_task_ids, run_leased

log = logging.getLogger("amp_runtime.tasks.batch")

NDJSON = "application/x-ndjson"
KEY_FIELD = "idempotency_key"


class BatchTaskRequest(TaskRequest, kw_only=True):
    """A `POST /tasks` item: a task request, and the `Idempotency-Key` a single `POST /task`
    would send as its header."""

    idempotency_key: Annotated[str | None, msgspec.Meta(description=(
        "As POST /task's Idempotency-Key header (the same keys): the same key with the same request "
        "is the same task, never a second run; with another request, this item is rejected (422)"))] = None


class Keyed(msgspec.Struct):
    """An item with an `idempotency_key`: the request without it (the fingerprint of the same
    `POST /task` body), and the key."""

    request: TaskRequest
    key: str


BatchItem = TaskRequest | Keyed | Rejected  # a request, or why it could not even be decoded


class BatchLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One task of a `POST /tasks` batch, sent when it finishes (an NDJSON line or an SSE event).

    `status` is the task's outcome (completed, failed, timed_out, cancelled), `queued` for an
    accepted webhook task, or `rejected` for an item admission refused (`problems` lists why);
    `http_status` is what a single `POST /task` would have answered."""

    index: Annotated[int, msgspec.Meta(ge=0, description="position of the item in the batch")]
    id: str | None = None
    status: str
    success: bool
    http_status: Annotated[int, msgspec.Meta(ge=100, le=599)]
    result: Any | msgspec.UnsetType = msgspec.UNSET  # as the item's TaskResult: null when completed with None
    error: TaskError | None = None
    duration_ms: float | None = None
    problems: list[str] | None = None
    replayed: Annotated[bool, msgspec.Meta(description=(
        "the answer recorded for the item's idempotency_key (POST /task's Idempotent-Replayed)"))] = False


OVERDUE_GRACE_S = 0.5  # as `wait_outcome`: past its deadline, a queued item is expired by the batch
_item_decoder = msgspec.json.Decoder(BatchTaskRequest)
_raw_items = msgspec.json.Decoder(list[msgspec.Raw])


def decode_batch(data: bytes, ndjson: bool, max_batch: int, max_depth: int) -> list[BatchItem]:
    """The batch's items; an item that does not decode is kept as its `Rejected` (its own line).
    Needs the app context (an item's error is worded as a single `POST /task` words it).

    Raises `ApiError`: 400 for a body that is not a JSON array (or NDJSON) of objects, 413 for
    more than `max_batch` items."""
    require_utf8(data)  # once for the whole body: an item decoded fast is not checked again
    if ndjson:
        raws: list[Any] = [line for line in data.split(b"\n") if line.strip()]
    else:
        try:
            raws = _raw_items.decode(data)
        except msgspec.ValidationError:
            raise ApiError(400, "INVALID_REQUEST", "a batch is a JSON array of task requests") from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, "MALFORMED_JSON", f"malformed JSON: {exc}") from None
    if len(raws) > max_batch:
        raise ApiError(413, "BATCH_TOO_LARGE", f"{len(raws)} tasks in one batch; at most {max_batch}")
    if not raws:
        raise ApiError(400, "EMPTY_BATCH", "a batch needs at least one task request")
    items: list[BatchItem] = []
    for raw in raws:
        item = bytes(raw)
        request: BatchTaskRequest | None = None
        if not json_depth_exceeds(item, max_depth):
            try:  # the common case, without the error wording's context lookups
                request = _item_decoder.decode(item)
            except msgspec.MsgspecError:
                pass
        if request is None:
            try:
                request = decode_body(_item_decoder, item)
            except ApiError as err:
                items.append(Rejected(err.status, err.code, err.message, problems=err.problems))
                continue
        items.append(request if request.idempotency_key is None else _keyed(request))
    return items


def _keyed(request: BatchTaskRequest) -> Keyed | Rejected:
    try:
        key = check_key(request.idempotency_key, KEY_FIELD)
    except Rejected as exc:
        return exc
    fields = msgspec.structs.asdict(request)
    del fields[KEY_FIELD]
    return Keyed(TaskRequest(**fields), key)


async def run_batch(service: Any, items: list[BatchItem], *, may_forward: bool = True) -> AsyncIterator[list[BatchLine]]:
    """Lines in the order the items finish, as lists of those finished since the last one was
    read (the response writes each list as one chunk). Closing the generator (the response's
    `aclose`, also when the client left) cancels the items still queued or running.

    Without forwarding, the sync items are admitted all at once, before any runs: each worker
    lends its free slots (`_run_leased`, one task each) and queues the rest by priority, whose
    outcomes come back through `Outcome.on_set` -- no task, event or scope per queued item.
    Webhook items and, when a node may forward, every item go through `submit` in a task each."""
    # Room for every line: an item never waits on the reader, so a slow reader holds no slot.
    send, receive = trio.open_memory_channel[BatchLine](len(items))
    queued = _Queued(send)
    async with trio.open_nursery() as nursery:
        try:
            ids = new_task_ids(len(items))
            for index, item in enumerate(items):
                if may_forward or not isinstance(item, TaskRequest) or item.mode != "sync":
                    nursery.start_soon(_run_item, service, index, item, send)
                    continue
                try:
                    worker, task, lease = service.admit_sync(item, ids[index])
                except (Rejected, WorkerFailed) as exc:
                    send.send_nowait(_refused(index, exc))
                    continue
                if lease is not None:
                    nursery.start_soon(_run_leased, worker, lease, task, index, send)
                else:
                    queued.add(worker, task, index)
            remaining = len(items)
            while remaining:
                with trio.move_on_at(queued.next_overdue_at()):
                    lines = [await receive.receive()]
                    while True:  # whatever else finished meanwhile goes out in the same chunk
                        try:
                            lines.append(receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    remaining -= len(lines)
                    try:
                        yield lines
                    except GeneratorExit:  # closed (the client left): end cleanly, the nursery too
                        return  # from this frame, GeneratorExit would leave the nursery as a group
                queued.expire_overdue()
        finally:
            queued.withdraw_all()
            nursery.cancel_scope.cancel()


class _Queued:
    """A batch's items waiting in their workers' queues: each reports its line when settled, is
    expired like `wait_outcome` expires a sync caller's task, and is withdrawn when the batch
    closes. Its methods never await."""

    def __init__(self, send: trio.MemorySendChannel):
        self.send = send
        self.tasks: dict[str, tuple[Any, Task, int]] = {}  # unsettled: id -> (worker, task, index)
        self.deadlines: list[tuple[float, str]] = []  # heap of (deadline, id)

    def add(self, worker: Any, task: Task, index: int) -> None:
        self.tasks[task.id] = (worker, task, index)
        heapq.heappush(self.deadlines, (task.deadline, task.id))
        task.outcome.on_set = partial(self._settled, index, task.id)

    def _settled(self, index: int, task_id: str, result: TaskResult) -> None:
        if self.tasks.pop(task_id, None) is None:
            return  # already answered as unsettled
        self.send.send_nowait(_outcome(index, OUTCOME_STATUS[result.status], result))

    def next_overdue_at(self) -> float:
        """When the earliest item is past its deadline plus the grace `wait_outcome` gives.

        Settled items stay in the heap until their deadline passes (`expire_overdue` drops them
        then): popping each as it settled was ~3% of a batch, and an early wake-up costs nothing."""
        return self.deadlines[0][0] + OVERDUE_GRACE_S if self.deadlines else math.inf

    def expire_overdue(self) -> None:
        now = trio.current_time()
        while self.deadlines and self.deadlines[0][0] + OVERDUE_GRACE_S <= now:
            _, task_id = heapq.heappop(self.deadlines)
            if task_id in self.tasks:
                worker, task, index = self.tasks[task_id]
                self._withdraw(worker, task, index, timed_out=True)

    def withdraw_all(self) -> None:
        for worker, task, index in list(self.tasks.values()):
            self._withdraw(worker, task, index, timed_out=False)

    def _withdraw(self, worker: Any, task: Task, index: int, *, timed_out: bool) -> None:
        """Cancel it on its worker, which settles it (and so reports its line); a worker that no
        longer knows it, or fails now, leaves it unanswered: its line says so."""
        try:
            outcome = worker.cancel(task.id, timed_out=timed_out)
        except WorkerFailed:
            outcome = None
        if outcome is None and task.id in self.tasks:  # nobody is left to settle it
            del self.tasks[task.id]
            self.send.send_nowait(BatchLine(index=index, status="failed", success=False, http_status=503,
                                            error=TaskError(type="WorkerFailed", message=(
                                                f"worker {worker.name} did not settle task {task.id}"))))


async def _run_leased(worker: Any, lease: Any, task: Task, index: int, send: trio.MemorySendChannel) -> None:
    result = await run_leased(worker, lease, task)
    send.send_nowait(_outcome(index, OUTCOME_STATUS[result.status], result))


def _refused(index: int, exc: Rejected | WorkerFailed) -> BatchLine:
    if isinstance(exc, WorkerFailed):
        return BatchLine(index=index, status="failed", success=False, http_status=503,
                         error=TaskError(type="WorkerFailed", message=str(exc)))
    return _rejected(index, exc)


async def _run_item(service: Any, index: int, item: BatchItem, send: trio.MemorySendChannel) -> None:
    # Never raises (but Cancelled): a crash here would cancel the nursery from under the reader.
    try:
        request, key = (item.request, item.key) if isinstance(item, Keyed) else (item, None)
        if isinstance(request, Rejected):
            line = _rejected(index, request)
        elif request.mode == "stream":
            line = _rejected(index, Rejected(400, "STREAM_IN_BATCH", "stream mode is not available in a batch; "
                                             "use POST /task"))
        else:
            line = await _submit(service, index, request, key)
    except Rejected as exc:
        line = _rejected(index, exc)
    except ApiError as err:  # a cluster node could not be reached
        line = _rejected(index, Rejected(err.status, err.code, err.message, problems=err.problems))
    except WorkerFailed as exc:
        line = _refused(index, exc)
    except Exception as exc:
        log.exception("batch item %d failed", index)
        line = BatchLine(index=index, status="failed", success=False, http_status=500,
                         error=TaskError(type="InternalError", message=type(exc).__name__))
    send.send_nowait(line)


async def _submit(service: Any, index: int, request: TaskRequest, key: str | None) -> BatchLine:
    submitted = await service.submit(request, key)
    if isinstance(submitted, Replayed):  # the key's first request answered it: its answer again
        line = _line(index, submitted.answer)
        line.replayed = True
        return line
    if isinstance(submitted, Forwarded):
        return _forwarded(index, submitted.response.status_code, await submitted.response.get_data())
    return _line(index, submitted)


def _line(index: int, submitted: Any) -> BatchLine:
    match submitted:
        case SyncOutcome(status=status, result=result):
            return _outcome(index, status, result)
        case TaskAccepted(id=task_id, status=state):
            return BatchLine(index=index, id=task_id, status=state, success=True, http_status=202)
    raise TypeError(f"unexpected answer {type(submitted).__name__} to a batch item")


def _outcome(index: int, status: int, result: TaskResult) -> BatchLine:
    return BatchLine(index=index, id=result.id, status=result.status, success=result.success,
                     http_status=status, result=result.result, error=result.error,
                     duration_ms=result.duration_ms)


def _rejected(index: int, exc: Rejected) -> BatchLine:
    return BatchLine(index=index, status="rejected", success=False, http_status=exc.status,
                     error=TaskError(type=exc.code, message=exc.message), problems=exc.problems)


def _forwarded(index: int, status: int, body: bytes) -> BatchLine:
    """A node's answer to a forwarded item, read back into a line."""
    if status == 202:
        accepted = msgspec.json.decode(body, type=TaskAccepted)
        return BatchLine(index=index, id=accepted.id, status=accepted.status, success=True, http_status=202)
    try:
        return _outcome(index, status, msgspec.json.decode(body, type=TaskResult))
    except msgspec.ValidationError:  # an error body: {error_code, error_message}
        error = msgspec.json.decode(body)
        return _rejected(index, Rejected(status, error.get("error_code", "NODE_ERROR"),
                                         error.get("error_message", "")))
