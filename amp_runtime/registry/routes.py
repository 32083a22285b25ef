"""Registry read API (`/workers`, `/workers/{id}`): every worker the registry has ever known."""
from ..core.clock import rfc3339
from ..core.http import Api, ApiError, CodedError
from ..core.ids import worker_id_problem
from .models import WorkerDetail, WorkerList, WorkerSummary
from .service import RegistryService

api = Api("registry", prefixes=("/workers/",))


@api.route("/workers", "GET", summary="List every known worker with its last heartbeat",
           responses={200: WorkerList, 401: CodedError})
async def list_workers(service: RegistryService) -> WorkerList:
    records = sorted(await service.all_records(), key=lambda r: r.id)
    return WorkerList([WorkerSummary(r.id, rfc3339(r.heartbeat_at)) for r in records])


@api.route("/workers/<worker_id>", "GET", summary="One worker's record with its build info",
           responses={200: WorkerDetail, 400: CodedError, 401: CodedError, 404: CodedError})
async def get_worker(worker_id: str, service: RegistryService) -> WorkerDetail:
    problem = worker_id_problem(worker_id, service.config.http.max_id_length)
    if problem is not None:
        raise ApiError(400, "INVALID_WORKER_ID", problem)
    rec = await service.get(worker_id)
    if rec is None:
        raise ApiError(404, "WORKER_NOT_FOUND", f"worker {worker_id!r} not found")
    return WorkerDetail(rec.id, rfc3339(rec.created_at), rfc3339(rec.registered_at), rfc3339(rec.heartbeat_at), rec.info)
