"""Tasks API."""
import msgspec
from quart import current_app

from ..core.http import Api

api = Api("tasks", prefixes=("/task", "/health", "/logs", "/on", "/off", "/ws/"))


class Health(msgspec.Struct):
    status: str
    version: str
    uptime_s: float


@api.route("/health", "GET", summary="Liveness and capacity", public=True, responses={200: Health})
async def health() -> Health:
    rt = current_app.runtime
    return Health("ok", rt.version, round(rt.uptime_s, 3))
