"""The Quart-Trio app factory: mounts each family's blueprint and the shared error handling."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, has_websocket_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from .config import Config
from .core.http import Api, ApiError, BoundServices, HttpSettings, error_response, render_coded

log = logging.getLogger("amp_runtime.http")


def api_families() -> list[Api]:
    """Every API family, in the order `/openapi` lists them."""
    from .durable.routes import api as durable_api
    from .jobs.routes import api as jobs_api
    from .meta_routes import api as meta_api
    from .observability.routes import api as observability_api
    from .registry.reporting import api as reporting_api
    from .registry.routes import api as registry_api
    from .tasks.routes import api as tasks_api

    return [tasks_api, registry_api, reporting_api, jobs_api, durable_api, observability_api, meta_api]


def create_app(config: Config, services: dict[str, Any]) -> QuartTrio:
    """The app serving every family; `services` maps a family name to the service its routes
    are handed (`amp_runtime.wiring.Services.by_family`)."""
    app = QuartTrio("amp_runtime")
    BoundServices(HttpSettings(config.auth.api_key, config.http.max_json_depth), dict(services)).attach(app)
    app.config["MAX_CONTENT_LENGTH"] = config.http.max_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.strict_slashes = False

    families = api_families()
    for family in families:
        app.register_blueprint(family.blueprint)
    app.families = families  # type: ignore[attr-defined]

    def family_for(path: str) -> Api | None:
        for family in families:
            if any(path.startswith(prefix) for prefix in family.prefixes):
                return family
        return None

    by_blueprint = {family.blueprint.name: family for family in families}

    def target() -> tuple[str, str]:
        """(method, path) of what is being answered: a request, or a WebSocket upgrade (which
        has no `request`: an error answered before accept is sent as the upgrade's HTTP answer)."""
        if has_websocket_context():
            return "WEBSOCKET", websocket.path
        return request.method, request.path

    def render(err: ApiError) -> Response:
        family = family_for(target()[1])
        return error_response(err, family.render_error if family else render_coded)

    @app.before_websocket
    async def websocket_door() -> Response | None:
        """Refuse an unauthorized upgrade with 401 before any family's handler runs."""
        family = by_blueprint.get(websocket.blueprint or "")
        if family is not None and not family.websocket_authorized():
            return render(ApiError(401, "UNAUTHORIZED", "missing or wrong Authorization header or subprotocol"))
        return None

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        method, path = target()
        status = exc.code or 500
        if method == "WEBSOCKET" and (status == 405 or isinstance(exc, WebsocketMismatch)):
            status = 404  # an upgrade on a plain HTTP route: there is no WebSocket there
        code = {
            404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
            413: "PAYLOAD_TOO_LARGE",
            400: "BAD_REQUEST",
        }.get(status, "HTTP_ERROR")
        message = {
            404: f"no WebSocket route for {path}" if method == "WEBSOCKET" else f"no route for {method} {path}",
            405: f"method {method} is not allowed on {path}",
            413: f"request body over the limit of {config.http.max_body_bytes} bytes",
        }.get(status, exc.description or "error")
        response = render(ApiError(status, code, message))
        if method == "WEBSOCKET":
            return response
        if exc.code == 413:
            response.headers["Connection"] = "close"  # the rest of that body is never read
        else:
            try:  # an unread body can stall the next request on a keep-alive connection
                await request.get_data()
            except Exception:
                response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", *target())
        return render(ApiError(500, "INTERNAL_ERROR", "internal server error"))

    if config.http.hot_path and "tasks" in services:  # an app wired without tasks has no /task
        from .tasks.hotpath import HotPath

        app.asgi_app = HotPath(app.asgi_app, app, services["tasks"], services.get("cluster"))  # type: ignore[method-assign]
    return app
