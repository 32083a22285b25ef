"""Jobs API (`/jobs*`): decode, ask the jobs service, encode. The rules live in service.py."""

from __future__ import annotations

from functools import wraps

from ..core.http import Api, ApiError, CodedError, Reply
from .models import BulkDeleteQuery, CreateJob, Job, JobList, JobProgress, JobsError, ListJobsQuery
from .service import JobService

api = Api("jobs", prefixes=("/jobs",))

_ERRORS = {400: CodedError, 404: CodedError, 500: CodedError}



def _coded(handler):
    """Turn the service's `JobsError` into the family's error body."""

    @wraps(handler)
    async def wrapper(**kwargs):
        try:
            return await handler(**kwargs)
        except JobsError as err:
            raise ApiError(err.status, err.code, err.message) from None

    return wrapper


@api.route(
    "/jobs",
    "POST",
    summary="Create a job: extract a dataset version over an inclusive block range",
    body=CreateJob,
    responses={201: Job, **_ERRORS, 409: CodedError, 503: CodedError},
)
@_coded
async def create_job(body: CreateJob, service: JobService):
    job = await service.create(body.dataset, body.start_block, body.end_block, body.node_id)
    return Reply(201, job, {"Location": f"/jobs/{job.id}"})


@api.route(
    "/jobs",
    "GET",
    summary="List jobs, newest first, with a cursor and a status filter",
    query=ListJobsQuery,
    responses={200: JobList, **_ERRORS},
)
@_coded
async def list_jobs(query: ListJobsQuery, service: JobService):
    return await service.list(query.limit, query.last_job_id, query.status)


@api.route(
    "/jobs",
    "DELETE",
    summary="Delete every terminal job matching status (terminal, completed, stopped, error)",
    query=BulkDeleteQuery,
    responses={204: None, **_ERRORS},
)
@_coded
async def delete_jobs(query: BulkDeleteQuery, service: JobService):
    await service.delete_many(query.status)
    return Reply(204)


@api.route("/jobs/<job_id>", "GET", summary="Get a job", responses={200: Job, **_ERRORS})
@_coded
async def get_job(job_id: str, service: JobService):
    return await service.get(job_id)


@api.route(
    "/jobs/<job_id>/progress",
    "GET",
    summary="Per-table progress of a job",
    responses={200: JobProgress, **_ERRORS},
)
@_coded
async def job_progress(job_id: str, service: JobService):
    return await service.progress_of(job_id)


@api.route(
    "/jobs/<job_id>/stop",
    "PUT",
    summary="Stop a job (idempotent; a terminal job is left unchanged)",
    responses={200: Job, **_ERRORS, 503: CodedError},
)
@_coded
async def stop_job(job_id: str, service: JobService):
    return await service.stop(job_id)


@api.route(
    "/jobs/<job_id>",
    "DELETE",
    summary="Delete a terminal job's record (its Parquet output stays on disk)",
    responses={204: None, **_ERRORS, 409: CodedError},
)
@_coded
async def delete_job(job_id: str, service: JobService):
    await service.delete(job_id)
    return Reply(204)
