"""Tasks API: `/task`, `/tasks/{id}`, `/health`, `/logs`, `/on`, `/off`, `/ws/slots`."""

from __future__ import annotations

from functools import partial

import msgspec
import trio
from quart import Response, current_app, request, websocket

from ..core.http import Api, ApiError, CodedError, Reply
from .models import (
    FunctionInfo, Health, Logs, Maintenance, Slots, TaskAccepted, TaskRequest, TaskResult,
    TaskView, WorkerHealth,
)
from . import idempotency
from .journal import AcceptedTask
from .registry import FUNCTIONS
from .validation import task_problems
from .webhooks import UnsafeTarget, check_target
from .worker import Rejected, Submit, run_sync

api = Api("tasks", prefixes=("/task", "/health", "/logs", "/on", "/off", "/ws/"))
_encode = msgspec.json.Encoder().encode
OUTCOME_STATUS = {"completed": 200, "failed": 500, "timed_out": 504, "cancelled": 409}


def _rejected(exc: Rejected) -> ApiError:
    headers = {"Retry-After": str(current_app.runtime.config.tasks.retry_after_s)} if exc.status == 429 else None
    return ApiError(exc.status, exc.code, exc.message, headers=headers)


@api.route(
    "/task", "POST", body=TaskRequest, summary="Run a function in a worker slot (sync, stream or webhook)",
    responses={200: TaskResult, 202: TaskAccepted, 400: CodedError, 401: CodedError, 404: CodedError,
               409: TaskResult, 413: CodedError, 422: CodedError, 429: CodedError, 500: TaskResult,
               503: CodedError, 504: TaskResult},
    headers=idempotency.SubmitHeaders,
)
async def submit_task(body: TaskRequest):
    # idempotency: an optional `Idempotency-Key` header (see tasks/idempotency.py); 400 when malformed
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    if key is not None:
        return await idempotency.submit_once(current_app.runtime.tasks.idempotency, key, body,
                                             partial(_submit_task, body))
    return await _submit_task(body, None)


async def _submit_task(body: TaskRequest, keyed):
    runtime = current_app.runtime
    service = runtime.tasks
    spec = FUNCTIONS.get(body.function)
    if spec is None:
        raise ApiError(404, "FUNCTION_NOT_FOUND", f"no function {body.function[:256]!r}")
    # idempotency: keys live in this process, so a keyed request runs here
    forwarded = None if keyed is not None else await runtime.cluster.route_task(body, spec)
    if forwarded is not None:
        return forwarded
    problems = task_problems(body, spec, service.workers, runtime.config.http.max_id_length)
    if problems:
        raise ApiError(400, "VALIDATION_ERROR", "; ".join(problems), problems=problems)
    if body.mode == "webhook":
        try:
            await check_target(body.webhook.url, runtime.config.webhook.allow_private)
        except UnsafeTarget as exc:
            raise ApiError(400, "WEBHOOK_TARGET_REFUSED", str(exc)) from None
    try:
        worker = service.pick_worker(spec, body.worker)
        task = service.new_task(body, spec)
        if keyed is not None:  # idempotency: duplicates attach to this task; DELETE /task finds it
            service.idempotency.bind(keyed, task)
        if body.mode == "sync":
            result = await run_sync(worker, task)
            return Reply(OUTCOME_STATUS[result.status], result, {"X-Task-Id": task.id})
        if service.maintenance:
            raise Rejected(503, "MAINTENANCE", "the runtime is in maintenance mode")
        if body.mode == "stream" and service.open_streams >= runtime.config.http.max_open_streams:
            raise Rejected(429, "TOO_MANY_STREAMS", "too many open streams")
        if body.mode == "webhook":  # journal: durable before the 202
            await _accept_webhook_task(service, worker, task, body, spec, keyed)
        else:
            await worker.ask(Submit(task))
        if task.outcome.done and task.status == "queued":  # refused by the worker
            await task.outcome.wait()
    except Rejected as exc:
        raise _rejected(exc) from None
    if body.mode == "webhook":
        return Reply(202, TaskAccepted(id=task.id))
    return _stream_response(service, task)


async def _accept_webhook_task(service, worker, task, body: TaskRequest, spec, keyed) -> None:
    """journal: persist, then submit; a refused task is forgotten again (it gets no 202)."""
    accepted = AcceptedTask(
        id=task.id, function=spec.name, input=body.input, priority=body.priority,
        webhook_url=body.webhook.url, webhook_headers=dict(body.webhook.headers),
        timeout_s=spec.timeout_s if spec.timeout_s is not None else service.config.tasks.default_timeout_s,
        worker=body.worker, group=spec.group, created_at=task.created_at,
        idempotency_key=keyed.key if keyed is not None else None,
        request_fingerprint=keyed.fingerprint if keyed is not None else None,
    )
    # Shielded: a client leaving after the row is durable must not leave a task that would only
    # run after a restart. Bounded by the store's commit and the worker's ask timeout.
    with trio.CancelScope(shield=True):
        try:
            await service.journal.accept(accepted)
        except Exception as exc:
            raise ApiError(503, "STORE_UNAVAILABLE", f"the task could not be persisted: {exc}") from None
        await worker.ask(Submit(task))
        if task.outcome.done and task.status == "queued":
            await service.journal.forget(task.id)


def _stream_response(service, task) -> Response:
    async def events():
        service.open_streams += 1
        try:
            async for item in task.items_recv:
                yield b"data: " + item + b"\n\n"
            result = await task.outcome.wait()
            event = b"end" if result.status == "completed" else b"error"
            yield b"event: " + event + b"\ndata: " + _encode(result) + b"\n\n"
        finally:
            service.open_streams -= 1
            task.items_recv.close()
            if not task.outcome.done:  # the reader left: cancel the task, free its slot now
                service.cancel_nowait(task)

    response = Response(events(), content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Task-Id": task.id})
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
async def get_task(task_id: str) -> TaskView:
    view = await current_app.runtime.tasks.lookup(_task_id(task_id))
    if view is None:
        raise ApiError(404, "TASK_NOT_FOUND", f"no task {task_id}")
    return view


@api.route("/tasks/<task_id>", "DELETE", summary="Cancel a queued or running task",
           responses={200: TaskView, 400: CodedError, 401: CodedError, 404: CodedError, 409: CodedError})
async def cancel_task(task_id: str) -> TaskView:
    service = current_app.runtime.tasks
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
async def cancel_task_by_key() -> TaskView:
    # idempotency: a sync client learns its task id only with the result; the key it chose works too
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    if key is None:
        raise ApiError(400, "INVALID_IDEMPOTENCY_KEY", f"DELETE /task needs an {idempotency.HEADER} header")
    task_id = current_app.runtime.tasks.idempotency.task_id_of(key)
    if task_id is None:
        raise ApiError(404, "TASK_NOT_FOUND", f"no task submitted with {idempotency.HEADER} {key[:64]!r}")
    return await cancel_task(task_id)


@api.route("/health", "GET", summary="Status and capacity; more detail with a valid key", public=True,
           responses={200: Health})
async def health() -> Health:
    runtime = current_app.runtime
    service = runtime.tasks
    states = [w.state for w in service.workers.values()]
    total = sum(s.total for s in states)
    free = sum(s.free for s in states)
    body = Health(
        status="maintenance" if service.maintenance else "ok",
        slots=Slots(total=total, busy=total - free, free=free),
        queued=sum(s.queued for s in states),
    )
    if not api.is_authorized():
        return body
    body.version = runtime.version
    body.uptime_s = round(runtime.uptime_s, 3)
    body.tags = dict(service.tags)
    body.functions = [FunctionInfo(name=f.name, group=f.group, contract=f.contract, streaming=f.streaming)
                      for f in FUNCTIONS.values()]
    body.workers = [
        WorkerHealth(id=w.name, slots=Slots(total=w.state.total, busy=w.state.total - w.state.free,
                                            free=w.state.free),
                     queued=w.state.queued, max_queue=w.config.max_queue, groups=w.config.groups,
                     tags=w.config.tags, maintenance=w.state.maintenance)
        for w in service.workers.values()
    ]
    return body


@api.route("/logs", "GET", summary="The last log lines", responses={200: Logs, 401: CodedError})
async def logs() -> Logs:
    return Logs(current_app.runtime.logs.snapshot())


@api.route("/off", "POST", summary="Maintenance on: new tasks get 503, queued and running ones finish",
           responses={200: Maintenance, 401: CodedError})
async def maintenance_on() -> Maintenance:
    await current_app.runtime.tasks.set_maintenance(True)
    return Maintenance(status="maintenance", maintenance=True)


@api.route("/on", "POST", summary="Maintenance off: accept tasks again",
           responses={200: Maintenance, 401: CodedError})
async def maintenance_off() -> Maintenance:
    await current_app.runtime.tasks.set_maintenance(False)
    return Maintenance(status="ok", maintenance=False)


@api.blueprint.websocket("/ws/slots")
async def slots_socket():
    """Pushes each worker's slot state on change (coalesced), every second, and on `ping`.

    The key comes as the Authorization header or, for browsers, as the subprotocol."""
    runtime = current_app.runtime
    protocols = websocket.requested_subprotocols
    header = websocket.headers.get("Authorization") or (protocols[0] if protocols else None)
    if not api.is_authorized(header):
        await websocket.close(1008, "unauthorized")
        return
    await websocket.accept(subprotocol=protocols[0] if protocols else None)
    workers = list(runtime.tasks.workers.values())
    min_interval = runtime.config.tasks.slots_push_min_interval_ms / 1000.0
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
