"""OpenAPI 3.1 generated from the routes' msgspec structs: nothing here is written by hand."""

from __future__ import annotations

import inspect
import re
from typing import Any, Iterable

import msgspec

from .http import RouteInfo

_REF = "#/components/schemas/{name}"


def _query_parameters(query_type: type, where: str = "query") -> list[dict[str, Any]]:
    params = []
    (schema,), components = msgspec.json.schema_components([query_type], ref_template=_REF)
    props = components.get(query_type.__name__, schema).get("properties", {})
    required = set(components.get(query_type.__name__, schema).get("required", []))
    for name, prop in props.items():
        param = {"name": name, "in": where, "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([^}]+)}", path)
    ]


def build_openapi(routes: Iterable[RouteInfo], *, title: str, version: str) -> dict[str, Any]:
    routes = list(routes)
    types: list[Any] = []
    for route in routes:
        if route.body is not None:
            types.append(route.body)
        types.extend(t for t in route.responses.values() if t is not None and not isinstance(t, str))
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(unique, ref_template=_REF)
    schema_of = dict(zip(unique, schemas))

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.family],
            "operationId": f"{route.method}_{re.sub(r'[^a-zA-Z0-9]+', '_', route.path).strip('_')}",
        }
        params = _path_parameters(route.path)
        if route.query is not None:
            params += _query_parameters(route.query)
        if route.headers is not None:
            params += _query_parameters(route.headers, "header")
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[route.body]}},
            }
        responses: dict[str, Any] = {}
        for status, typ in sorted(route.responses.items()):
            entry: dict[str, Any] = {"description": _describe_status(status)}
            if isinstance(typ, str):  # a media type with free-form content (SSE, HTML)
                entry["content"] = {typ: {"schema": {"type": "string"}}}
            elif typ is not None:
                ctype = route.content_type if 200 <= status < 300 else "application/json"
                entry["content"] = {ctype: {"schema": schema_of[typ]}}
            responses[str(status)] = entry
        if not responses:
            responses["200"] = {"description": "OK"}
        op["responses"] = responses
        if not route.public:
            op["security"] = [{"apiKey": []}, {"bearer": []}]
        if route.describe is not None:
            route.describe(op, components)
        paths.setdefault(route.path, {})[route.method] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
    413: "Payload Too Large", 422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def _describe_status(status: int) -> str:
    return _STATUS_TEXT.get(status, inspect.cleandoc(f"HTTP {status}"))
