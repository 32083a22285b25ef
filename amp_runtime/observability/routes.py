"""Observability: `GET /metrics` (Prometheus text format) and the dashboard (`/`, `/ui`).

The page shell and its assets are public (they hold no data); every data call the page makes,
and `/metrics`, need the API key when one is set.
"""

from __future__ import annotations

from quart import Response

from ..core.http import Api, ApiError, CodedError
from .dashboard import Overview, static_asset
from .service import ObservabilityService

api = Api("observability", prefixes=("/metrics", "/ui"))
# The classic text format every Prometheus understands (generate_latest writes it; all our
# names are legacy-valid, so the newer 1.0.0 text format would add nothing).
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@api.route("/metrics", "GET", summary="Runtime metrics in the Prometheus text exposition format",
           responses={200: "text/plain", 401: CodedError}, content_type="text/plain")
async def metrics(service: ObservabilityService) -> Response:
    body = await service.scrape()
    return Response(body, content_type=PROMETHEUS_TEXT)


@api.route("/ui", "GET", summary="The dashboard page (its data calls need the API key)", public=True,
           aliases=("/",), responses={200: "text/html"}, content_type="text/html")
async def dashboard() -> Response:
    return _asset("dashboard.html")


@api.route("/ui/static/<name>", "GET", summary="Dashboard assets", public=True,
           responses={200: "application/octet-stream", 404: CodedError})
async def dashboard_static(name: str) -> Response:
    return _asset(name)


@api.route("/ui/api/overview", "GET", summary="Slots, running tasks and settled-task counters for the dashboard",
           responses={200: Overview, 401: CodedError})
async def overview(service: ObservabilityService) -> Overview:
    return await service.overview()


def _asset(name: str) -> Response:
    found = static_asset(name)
    if found is None:
        raise ApiError(404, "NOT_FOUND", f"no asset {name[:256]}")
    body, content_type = found
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-cache"})
