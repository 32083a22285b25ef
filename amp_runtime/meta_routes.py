"""`/openapi` and `/docs`: generated from the other families' routes, served from the package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
from quart import Response, current_app

from .core.assets import PackagedAssets
from .core.http import Api, ApiError
from .core.openapi import build_openapi

api = Api("meta", prefixes=("/openapi", "/docs"))


@dataclass(frozen=True)
class ApiDocs:
    """What the meta routes are handed at wiring time."""

    enabled: bool  # [http] openapi_enabled
    version: str

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
