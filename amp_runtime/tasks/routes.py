"""Tasks API: `/task`, `/tasks/{id}`, `/health`, `/logs`, `/on`, `/off`, `/ws/slots`."""

from __future__ import annotations

from contextlib import aclosing

import msgspec
import trio
from quart import Response, request, websocket

from ..core.http import SEMANTIC_CHECKS, Api, ApiError, CodedError, Reply, bound_service
from ..core.sse import sse_event
from . import idempotency
from .batch import NDJSON, BatchLine, BatchTaskRequest, decode_batch
from .errors import Rejected, WorkerFailed
from .models import (
    Build, FunctionInfo, Health, Logs, Maintenance, Slots, StoreHealth, TaskAccepted, TaskRequest, TaskResult,
    TaskView, WorkerHealth,
)
from .openapi import document_function_inputs
from .registry import FUNCTIONS
from .service import Forwarded, Replayed, StreamHandle, SyncOutcome, TaskService
from .validation import salvaged_problems

api = Api("tasks", prefixes=("/task", "/health", "/logs", "/on", "/off", "/ws/"))
_encode = msgspec.json.Encoder().encode


def _salvaged_problems(plain) -> list[str]:
    service: TaskService = bound_service("tasks")
    return salvaged_problems(plain, service.workers, service.config.http.max_id_length)


# Every decoder of a task request (this family's routes, the hot path, a batch's items) lists
# the semantic problems of a body that fails to decode along with its structural ones.
SEMANTIC_CHECKS[TaskRequest] = _salvaged_problems


def _api_error(exc: Rejected | WorkerFailed, retry_after_s: int) -> ApiError:
    retry_after = str(retry_after_s)
    if isinstance(exc, WorkerFailed):
        return ApiError(503, "WORKER_FAILED", str(exc), headers={"Retry-After": retry_after})
    headers = {"Retry-After": retry_after} if exc.status in (429, 503) else None
    return ApiError(exc.status, exc.code, exc.message, problems=exc.problems, headers=headers)


@api.route(
    "/task", "POST", body=TaskRequest, summary="Run a function in a worker slot (sync, stream or webhook)",
    responses={200: TaskResult, 202: TaskAccepted, 400: CodedError, 401: CodedError, 404: CodedError,
               409: TaskResult, 413: CodedError, 422: CodedError, 429: CodedError, 500: TaskResult,
               503: CodedError, 504: TaskResult},
    describe=document_function_inputs,
    headers=idempotency.SubmitHeaders,
)
async def submit_task(service: TaskService, body: TaskRequest):
    try:
        submitted = await service.submit(body, idempotency.parse_key(request.headers.get(idempotency.HEADER)))
    except (Rejected, WorkerFailed) as exc:
        raise _api_error(exc, service.config.tasks.retry_after_s) from None
    return _encoded(submitted)


def _encoded(submitted, extra_headers: dict[str, str] | None = None):
    match submitted:
        case SyncOutcome(status=status, result=result):
            return Reply(status, result, {"X-Task-Id": result.id, **(extra_headers or {})})
        case TaskAccepted():
            return Reply(202, submitted, extra_headers)
        case StreamHandle():
            return _stream_response(submitted)
        case Forwarded(response=response):
            return response
        case Replayed(answer=TaskResult() as result):  # a finished stream: its final event
            event = b"end" if result.status == "completed" else b"error"
            return Response(sse_event(_encode(result), event),
                            content_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Task-Id": result.id, **idempotency.REPLAYED})
        case Replayed(answer=answer):
            return _encoded(answer, idempotency.REPLAYED)


def _stream_response(handle: StreamHandle) -> Response:
    async def body():
        try:
            async with aclosing(handle.events()) as events:
                async for event, data in events:
                    yield sse_event(data, event)
        finally:
            handle.close()  # the stream's place and, if the reader left, its task

    response = Response(body(), content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Task-Id": handle.id})
    response.timeout = None
    return response


def _document_batch_body(operation: dict, schemas: dict) -> None:
    """The body is read raw (each item decoded on its own), so its schema is stated here."""
    (item,), item_schemas = msgspec.json.schema_components([BatchTaskRequest], ref_template="#/components/schemas/{name}")
    schemas.update(item_schemas)
    items = {"type": "array", "items": item}
    operation["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": items}, NDJSON: {"schema": {"type": "string"}}}}
    operation["responses"]["200"]["content"]["text/event-stream"] = {"schema": {"type": "string"}}


@api.route(
    "/tasks", "POST", summary="Run a batch of tasks (a JSON array or NDJSON of task requests); "
    "a line per task as it finishes (NDJSON, or SSE with Accept: text/event-stream)",
    responses={200: BatchLine, 400: CodedError, 413: CodedError}, content_type=NDJSON,
    describe=_document_batch_body,
)
async def submit_batch(service: TaskService):
    limits = service.config.http
    items = decode_batch(await request.get_data(), request.mimetype == NDJSON, limits.max_batch, limits.max_json_depth)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    lines = service.submit_batch(items)

    async def body():
        async with aclosing(lines):  # closing it cancels the unfinished items (the client left)
            async for chunk in lines:
                for line in chunk:
                    yield sse_event(_encode(line)) if sse else _encode(line) + b"\n"

    response = Response(body(), content_type="text/event-stream" if sse else NDJSON,
                        headers={"Cache-Control": "no-cache"})
    response.timeout = None
    return response


class NoopResult(msgspec.Struct):
    function: str
    status: str = "noop"


@api.route("/noop", "POST", body=TaskRequest, summary="Decode a task request and answer without running it "
           "(the ceiling /task is benchmarked against)", responses={200: NoopResult, 400: CodedError, 401: CodedError})
async def noop(body: TaskRequest) -> NoopResult:
    return NoopResult(function=body.function)


def _task_id(task_id: str) -> str:
    if not task_id or len(task_id) > 64 or not task_id.isalnum():
        raise ApiError(400, "INVALID_TASK_ID", f"invalid task id {task_id[:64]!r}")
    return task_id


@api.route("/tasks/<task_id>", "GET", summary="A task's state, result or error, and webhook deliveries",
           responses={200: TaskView, 400: CodedError, 401: CodedError, 404: CodedError})
async def get_task(service: TaskService, task_id: str) -> TaskView:
    view = await service.lookup(_task_id(task_id))
    if view is None:
        raise ApiError(404, "TASK_NOT_FOUND", f"no task {task_id}")
    return view


@api.route("/tasks/<task_id>", "DELETE", summary="Cancel a queued or running task",
           responses={200: TaskView, 400: CodedError, 401: CodedError, 404: CodedError, 409: CodedError})
async def cancel_task(service: TaskService, task_id: str) -> TaskView:
    outcome = await service.cancel(_task_id(task_id))
    if outcome is None:
        view = await service.lookup(task_id)
        if view is None:
            raise ApiError(404, "TASK_NOT_FOUND", f"no task {task_id}")
        raise ApiError(409, "TASK_FINISHED", f"task {task_id} already finished ({view.status})")
    with trio.move_on_after(5):
        await outcome.wait()
    return await service.lookup(task_id)


@api.route("/task", "DELETE", summary="Cancel the task submitted with the `Idempotency-Key` header's key",
           responses={200: TaskView, 400: CodedError, 401: CodedError, 404: CodedError, 409: CodedError},
           headers=idempotency.CancelHeaders)
async def cancel_task_by_key(service: TaskService) -> TaskView:
    try:
        task_id = service.task_id_for_key(request.headers.get(idempotency.HEADER))
    except Rejected as exc:
        raise _api_error(exc, service.config.tasks.retry_after_s) from None
    return await cancel_task(service, task_id)


@api.route("/health", "GET", summary="Status and capacity; more detail with a valid key", public=True,
           responses={200: Health})
async def health(service: TaskService) -> Health:
    states = [w.state for w in service.workers.values()]
    total = sum(s.total for s in states)
    free = sum(s.free for s in states)
    body = Health(
        status="maintenance" if service.maintenance else "ok",
        slots=Slots(total=total, busy=total - free, free=free,
                    abandoned=sum(w.abandoned for w in service.workers.values())),
        queued=sum(s.queued for s in states),
    )
    if not api.is_authorized():
        return body
    unavailable = service.store.unavailable
    body.store = StoreHealth("available") if unavailable is None else StoreHealth("unavailable", unavailable)
    body.version = service.process.version
    build = service.process.build()
    body.build = Build(build.version, build.commit_sha, build.commit_timestamp, build.build_date)
    body.uptime_s = round(service.process.uptime_s(), 3)
    body.tags = dict(service.tags)
    body.functions = [FunctionInfo(name=f.name, group=f.group, contract=f.contract, streaming=f.streaming)
                      for f in FUNCTIONS.values()]
    body.workers = [
        WorkerHealth(id=w.name, slots=Slots(total=w.state.total, busy=w.state.total - w.state.free,
                                            free=w.state.free, abandoned=w.abandoned),
                     queued=w.state.queued, max_queue=w.config.max_queue, groups=w.config.groups,
                     tags=w.config.tags, maintenance=w.state.maintenance)
        for w in service.workers.values()
    ]
    return body


@api.route("/logs", "GET", summary="The last log lines", responses={200: Logs, 401: CodedError})
async def logs(service: TaskService) -> Logs:
    return Logs(service.process.logs.snapshot())


@api.route("/off", "POST", summary="Maintenance on: new tasks get 503, queued and running ones finish",
           responses={200: Maintenance, 401: CodedError})
async def maintenance_on(service: TaskService) -> Maintenance:
    await service.set_maintenance(True)
    return Maintenance(status="maintenance", maintenance=True)


@api.route("/on", "POST", summary="Maintenance off: accept tasks again",
           responses={200: Maintenance, 401: CodedError})
async def maintenance_off(service: TaskService) -> Maintenance:
    await service.set_maintenance(False)
    return Maintenance(status="ok", maintenance=False)


@api.blueprint.websocket("/ws/slots")
async def slots_socket():
    """Pushes each worker's slot state on change (coalesced), every second, and on `ping`.

    The key comes as the Authorization header or, for browsers, as the subprotocol."""
    service: TaskService = bound_service(api.family)
    protocols = websocket.requested_subprotocols
    header = websocket.headers.get("Authorization") or (protocols[0] if protocols else None)
    if not api.is_authorized(header):
        await websocket.close(1008, "unauthorized")
        return
    await websocket.accept(subprotocol=protocols[0] if protocols else None)
    workers = list(service.workers.values())
    min_interval = service.config.tasks.slots_push_min_interval_ms / 1000.0
    sent: dict[str, object] = {}

    async def push(force: bool) -> None:
        for worker in workers:
            state = worker.state
            if force or sent.get(worker.name) != state:
                sent[worker.name] = state
                await websocket.send(_encode(state).decode())

    async def answer_pings() -> None:
        while True:
            if (await websocket.receive()) == "ping":
                await push(force=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_pings)
        await push(force=True)
        while True:
            with trio.move_on_after(1.0) as heartbeat:
                async with trio.open_nursery() as waiters:
                    for worker in workers:
                        waiters.start_soon(_wait_then_cancel, worker, waiters.cancel_scope)
            await push(force=heartbeat.cancelled_caught)
            await trio.sleep(min_interval)  # coalesce: at most one push per interval


async def _wait_then_cancel(worker, scope: trio.CancelScope) -> None:
    await worker.wait_changed()
    scope.cancel()
