"""Registry reporting API (`/workers.*`, `/auth.login`), wire-compatible with its original clients.

Every answer, errors included, is wrapped in the `{"meta": ..., "data": ...}` envelope; paths are
accepted bare and `/v2.N/`-prefixed, by GET (with a JSON body) as well as POST.
"""
from __future__ import annotations

import base64
import uuid

import msgspec
from quart import request

from ..core.clock import rfc3339
from ..core.http import Api, ApiError, Reply, bound_service, key_matches, presented_credential
from .models import (
    API_VERSION,
    VERSION_PREFIX,
    ActivityData,
    ActivityRequest,
    CountData,
    Empty,
    Endpoint,
    Envelope,
    IdName,
    LoginData,
    LoginQuery,
    Meta,
    MetricKeysData,
    MetricKeysRequest,
    RegisterRequest,
    ReportedWorker,
    StatsData,
    StatsRequest,
    StatusReportRequest,
    UnregisterRequest,
    WorkersData,
    WorkersFilter,
    envelope_of,
)
from .service import RegistryService

_encoder = msgspec.json.Encoder()


def _endpoint() -> Endpoint:
    """The endpoint name and requested version, from the request path."""
    parts = request.path.strip("/").split("/")
    requested = parts[0][1:] if len(parts) > 1 and VERSION_PREFIX.match(parts[0]) else API_VERSION
    return Endpoint(name=parts[-1], requested_version=requested, actual_version=API_VERSION)


def _meta(code: int, message: str, error_data: dict | None = None) -> Meta:
    trx = uuid.uuid4().hex
    return Meta(id=trx, trx=trx, endpoint=_endpoint(), result_code=code, result_subcode=0,
                result_msg=message, error_stack="", error_data=error_data or {})


def render_envelope_error(err: ApiError) -> bytes:
    return _encoder.encode(Envelope(_meta(err.status, err.message, {"error_code": err.code, "problems": err.problems}), {}))


def _authorize(credential: str) -> bool:
    return bound_service("reporting").token_identity(credential) is not None


api = Api("reporting", prefixes=("/workers.", "/auth.", "/v2."), render_error=render_envelope_error,
          error_schema=lambda status: Envelope, authorize=_authorize)


def _ok(data: msgspec.Struct) -> Reply:
    return Reply(200, Envelope(_meta(200, "OK"), data))


def _check_version(version: str | None) -> None:
    if version is not None and not VERSION_PREFIX.match(version):
        raise ApiError(404, "NOT_FOUND", f"no route for {request.path}")


def _reporting_route(name: str, summary: str, body: type | None, data: type, *, public: bool = False,
                     method: str = "POST", other: str = "GET"):
    """`/name` and `/<version>/name`, by POST and GET alike."""
    return api.route(f"/{name}", method, summary=summary, body=body, public=public,
                     aliases=(f"/<version>/{name}",), extra_methods=(other,),
                     responses={200: envelope_of(data), 400: Envelope, 401: Envelope})


def _id_name(value: str | None) -> IdName | None:
    return None if value is None else IdName(value, value)


def _reported(rec) -> ReportedWorker:
    return ReportedWorker(
        id=rec.id, ip=rec.ip, register_time=rfc3339(rec.registered_at), last_activity_time=rfc3339(rec.heartbeat_at),
        last_report_time=rfc3339(rec.last_report_at) if rec.last_report_at else None,
        task=_id_name(rec.task), queue=_id_name(rec.queue), queues=[IdName(q, q) for q in rec.queues],
        tags=rec.tags, system_tags=rec.system_tags,
    )


def _basic_pair(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        access_key, sep, secret_key = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError; so is non-ASCII input
        return None
    return (access_key, secret_key) if sep else None


@api.route("/auth.login", "GET", summary="Log in with HTTP Basic access_key:secret_key (or refresh a token); "
           "returns a JWT", query=LoginQuery, public=True, aliases=("/<version>/auth.login",),
           extra_methods=("POST",), responses={200: envelope_of(LoginData), 400: Envelope, 401: Envelope})
async def login(query: LoginQuery, service: RegistryService, version: str | None = None) -> Reply:
    """Basic with a configured pair -> token (a wrong pair is 401). A valid token or the API key
    -> a fresh token (the original client refreshes that way). Anything else is 400: the route is
    public, so a missing credential is a malformed request rather than a refused one."""
    _check_version(version)
    registry, auth = service, service.config.auth
    header = request.headers.get("Authorization", "")
    pair = _basic_pair(header)
    if pair is not None:
        return _ok(LoginData(registry.login(*pair, ttl_s=query.expiration_sec)))
    credential = presented_credential(header)
    identity = registry.token_identity(credential) if credential else None
    if identity is None and auth.api_key and key_matches(credential, auth.api_key):
        identity = {"company": "amp", "company_name": "amp_runtime", "user": "api-key", "role": "user"}
    if identity is None:
        raise ApiError(400, "MISSING_CREDENTIALS",
                       "auth.login needs HTTP Basic access_key:secret_key, a valid token or the API key")
    return _ok(LoginData(registry.issue_token(identity, ttl_s=query.expiration_sec)))


@_reporting_route("workers.register", "Register a worker", RegisterRequest, Empty)
async def register(body: RegisterRequest, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    await service.register(body.worker, timeout=body.timeout, ip=request.remote_addr, queues=body.queues,
                               tags=body.tags, system_tags=body.system_tags)
    return _ok(Empty())


@_reporting_route("workers.status_report", "Report a worker's status and machine stats", StatusReportRequest, Empty)
async def status_report(body: StatusReportRequest, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    await service.status_report(body, ip=request.remote_addr)
    return _ok(Empty())


@_reporting_route("workers.unregister", "Unregister a worker", UnregisterRequest, Empty)
async def unregister(body: UnregisterRequest, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    await service.unregister(body.worker)
    return _ok(Empty())


@_reporting_route("workers.get_all", "Registered workers (last_seen default 3600 s; tag filters)",
                  WorkersFilter, WorkersData)
async def get_all(body: WorkersFilter, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    registry = service
    records = await registry.registered(body, default_last_seen=registry.settings.default_last_seen_s)
    return _ok(WorkersData([_reported(r) for r in records]))


@_reporting_route("workers.get_count", "Number of registered workers (same filters, no last_seen default)",
                  WorkersFilter, CountData)
async def get_count(body: WorkersFilter, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    return _ok(CountData(len(await service.registered(body, default_last_seen=None))))


@_reporting_route("workers.get_metric_keys", "Metric keys found in the stats, by category",
                  MetricKeysRequest, MetricKeysData)
async def get_metric_keys(body: MetricKeysRequest, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    return _ok(await service.metric_keys(body.worker_ids))


@_reporting_route("workers.get_stats", "Machine stats aggregated by interval", StatsRequest, StatsData)
async def get_stats(body: StatsRequest, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    return _ok(await service.stats(body))


@_reporting_route("workers.get_activity_report", "Reporting and active workers per interval",
                  ActivityRequest, ActivityData)
async def get_activity_report(body: ActivityRequest, service: RegistryService, version: str | None = None) -> Reply:
    _check_version(version)
    return _ok(await service.activity(body.from_date, body.to_date, body.interval))
