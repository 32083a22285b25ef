"""`/openapi` and `/docs`, generated from the other families' routes and served from the package;
`/ready`, the readiness a load balancer polls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec
from quart import Response, current_app

from .core.assets import PackagedAssets
from .core.http import Api, ApiError, Reply
from .core.openapi import build_openapi

api = Api("meta", prefixes=("/openapi", "/docs", "/ready"))


@dataclass(frozen=True)
class ApiDocs:
    """What the meta routes are handed at wiring time."""

    enabled: bool  # [http] openapi_enabled
    version: str
    not_ready: Callable[[], str | None] = lambda: None  # why this process should get no traffic now


class Readiness(msgspec.Struct, omit_defaults=True):
    """`ready`, or `unavailable` with the reason (the store is away, the process is draining)."""

    status: str
    reason: str | None = None

_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amp-runtime API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi", dom_id: "#swagger-ui"});</script>
</body></html>
"""
_STATIC_TYPES = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}


def _swagger_static_dir() -> Path:
    import swagger_ui

    return Path(swagger_ui.__file__).parent / "static"


_SWAGGER_ASSETS = PackagedAssets(_swagger_static_dir, _STATIC_TYPES)


def _require_enabled(docs: ApiDocs) -> None:
    if not docs.enabled:
        raise ApiError(404, "NOT_FOUND", "the API documentation is disabled ([http] openapi_enabled)")


@api.route("/openapi", "GET", summary="The OpenAPI 3.1 document of every route", public=True,
           responses={200: "application/json"})
async def openapi(service: ApiDocs) -> Response:
    _require_enabled(service)
    cached = getattr(current_app, "_openapi_json", None)
    if cached is None:
        routes = [route for family in current_app.families for route in family.routes]
        document = build_openapi(routes, title="amp-runtime", version=service.version)
        cached = current_app._openapi_json = msgspec.json.encode(document)
    return Response(cached, content_type="application/json")


@api.route("/ready", "GET", summary="Readiness: 200 while the store answers and the process is not draining",
           public=True, responses={200: Readiness, 503: Readiness})
async def ready(service: ApiDocs) -> Reply:
    reason = service.not_ready()
    if reason is None:
        return Reply(200, Readiness(status="ready"))
    return Reply(503, Readiness(status="unavailable", reason=reason), {"Retry-After": "1"})


@api.route("/docs", "GET", summary="Swagger UI for /openapi", public=True,
           responses={200: "text/html"})
async def docs(service: ApiDocs) -> Response:
    _require_enabled(service)
    return Response(_DOCS_PAGE, content_type="text/html")


@api.route("/docs/static/<name>", "GET", summary="Swagger UI assets", public=True,
           responses={200: "application/octet-stream", 404: None})
async def docs_static(name: str, service: ApiDocs) -> Response:
    _require_enabled(service)
    found = _SWAGGER_ASSETS.get(name)
    if found is None:
        raise ApiError(404, "NOT_FOUND", f"no asset {name[:256]}")
    body, content_type = found
    return Response(body, content_type=content_type)
