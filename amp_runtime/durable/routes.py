"""Durable workers API (`/v1/templates/...`): decode, ask the service, encode.

Decisions beyond the reference: `invoke` answers 200 with no body once the invocation is
persisted (it runs later, in order); `interrupt` answers `true`; `GET .../oplog` lists a
worker's persisted events (where a caller finds the promise ids of `approval`).
"""

from __future__ import annotations

from functools import wraps

from quart import Response, request

from ..core.http import Api, ApiError, DurableError, DurableErrors, Reply, render_durable
from .models import (
    CompleteParameters,
    InterruptQuery,
    InvocationKey,
    InvokeAndAwaitQuery,
    InvokeParameters,
    InvokeQuery,
    InvokeResult,
    Oplog,
    TemplateInfo,
    VersionedWorkerId,
    WorkerCreationRequest,
    WorkerError,
    WorkerMetadata,
)
from .relay import FORWARDED_HEADER, Outgoing, OwnedElsewhere
from .service import DurableService

api = Api("durable", render_error=render_durable, prefixes=("/v1/",),
          error_schema=lambda status: DurableErrors if status == 400 else DurableError)

_ERRORS = {400: DurableErrors, 401: DurableError, 404: DurableError, 500: DurableError,
           503: DurableError}  # 503: peers on PostgreSQL (the store, or a worker moving between peers)
_WORKER = "/v1/templates/<template_id>/workers/<worker_name>"



MOVES = 3  # an instance found elsewhere this often (its owner died, another took it) -> 503


def _errors(handler):
    """Turn the service's `WorkerError` into the family's error body; relay a request for an
    instance another peer runs to that peer (peers on PostgreSQL), once, and its answer back."""

    @wraps(handler)
    async def wrapper(**kwargs):
        # Read any body we do not use: an unread body stalls the next answer on a keep-alive
        # connection (seen with hypercorn: a bodiless route sent a body hangs now and then).
        body = await request.get_data()
        try:
            for _ in range(MOVES):
                try:
                    return await handler(**kwargs)
                except OwnedElsewhere as elsewhere:
                    if request.headers.get(FORWARDED_HEADER):
                        raise WorkerError(503, f"worker {elsewhere.worker} is moving between peers; retry") from None
                    outgoing = Outgoing(request.method, request.full_path.rstrip("?"), body,
                                        request.headers.get("Authorization"))
                    relayed = await kwargs["service"].forward(elsewhere, outgoing)
                    if relayed is not None:
                        return Response(relayed.body, relayed.status, relayed.headers)
            raise WorkerError(503, "the worker keeps moving between peers; retry")
        except WorkerError as err:
            raise ApiError(err.status, "DURABLE", err.message, problems=err.problems) from None

    return wrapper


@api.route("/v1/templates", "GET", summary="List the registered templates and their exported functions",
           responses={200: list[TemplateInfo], 401: DurableError})
@_errors
async def list_templates(service: DurableService):
    return service.list_templates()


@api.route("/v1/templates/<template_id>/workers", "POST", summary="Create a durable worker of a template",
           body=WorkerCreationRequest,
           responses={200: VersionedWorkerId, **_ERRORS, 403: DurableError, 409: DurableError})
@_errors
async def create_worker(template_id: str, body: WorkerCreationRequest, service: DurableService):
    return await service.create_worker(template_id, body.name, body.args, body.env)


@api.route("/v1/templates/workers/<worker_id>", "GET",
           summary="The components of a textual worker id templateId.workerName",
           responses={200: VersionedWorkerId, **_ERRORS})
@_errors
async def parse_worker_id(worker_id: str, service: DurableService):
    return await service.parse_worker_id(worker_id)


@api.route(_WORKER, "GET", summary="A worker's metadata", responses={200: WorkerMetadata, **_ERRORS})
@_errors
async def get_worker(template_id: str, worker_name: str, service: DurableService):
    return await service.metadata(template_id, worker_name)


@api.route(_WORKER, "DELETE", summary="Interrupt and delete a worker", responses={200: None, **_ERRORS})
@_errors
async def delete_worker(template_id: str, worker_name: str, service: DurableService):
    await service.delete(template_id, worker_name)
    return Reply(200)


@api.route(f"{_WORKER}/key", "POST", summary="Create an invocation key for a worker",
           responses={200: InvocationKey, **_ERRORS})
@_errors
async def create_key(template_id: str, worker_name: str, service: DurableService):
    return InvocationKey(await service.new_key(template_id, worker_name))


@api.route(f"{_WORKER}/invoke-and-await", "POST",
           summary="Invoke a function under an invocation key and await its result (a retried key runs once). "
           "409: the key was used for another call, or the worker was interrupted while the caller waited "
           "(the invocation resumes when the worker is next used: retry with the same key)",
           query=InvokeAndAwaitQuery, body=InvokeParameters,
           responses={200: InvokeResult, **_ERRORS, 409: DurableError, 504: DurableError})
@_errors
async def invoke_and_await(template_id: str, worker_name: str, query: InvokeAndAwaitQuery, body: InvokeParameters, service: DurableService):
    return await service.invoke_and_await(
        template_id, worker_name, query.function, body.params, query.invocation_key, query.calling_convention
    )


@api.route(f"{_WORKER}/invoke", "POST", summary="Enqueue an invocation and return once it is persisted",
           query=InvokeQuery, body=InvokeParameters, responses={200: None, **_ERRORS})
@_errors
async def invoke(template_id: str, worker_name: str, query: InvokeQuery, body: InvokeParameters, service: DurableService):
    await service.invoke(template_id, worker_name, query.function, body.params)
    return Reply(200)


@api.route(f"{_WORKER}/complete", "POST",
           summary="Complete a promise: true, or false when it was already completed",
           body=CompleteParameters, responses={200: bool, **_ERRORS})
@_errors
async def complete_promise(template_id: str, worker_name: str, body: CompleteParameters, service: DurableService):
    return await service.complete(template_id, worker_name, body.oplogIdx, body.data)


@api.route(f"{_WORKER}/interrupt", "POST",
           summary="Interrupt the running invocation (recover-immediately: re-run it at once)",
           query=InterruptQuery, responses={200: bool, **_ERRORS})
@_errors
async def interrupt_worker(template_id: str, worker_name: str, query: InterruptQuery, service: DurableService):
    recover = query.recover_immediately or query.recovery_immediately
    return await service.interrupt(template_id, worker_name, recover)


@api.route(f"{_WORKER}/oplog", "GET", summary="A worker's persisted events (ours, not in the reference)",
           responses={200: Oplog, **_ERRORS})
@_errors
async def worker_oplog(template_id: str, worker_name: str, service: DurableService):
    return await service.oplog(template_id, worker_name)
