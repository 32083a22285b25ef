"""The node channel endpoint, `GET /ws/cluster/node` (WebSocket), served by a coordinator.

Not part of the public API (so not in /openapi): only nodes of the cluster dial it, with
`Authorization: Bearer <cluster key>`; anything else is refused with 401 before the upgrade.
"""

from __future__ import annotations

import logging

from quart import Blueprint, Response, websocket

from ..core.http import JSON, ApiError, bound_service, render_coded
from .auth import has_cluster_key

log = logging.getLogger("amp_runtime.cluster")
blueprint = Blueprint("cluster", __name__)


def _refuse(status: int, code: str, message: str) -> Response:
    return Response(render_coded(ApiError(status, code, message)), status=status, content_type=JSON)


@blueprint.websocket("/ws/cluster/node")
async def node_channel():
    cluster = bound_service("cluster")
    if not cluster.accepts_nodes:
        return _refuse(404, "NOT_A_COORDINATOR", "this process accepts no nodes ([cluster] key unset, or it is a node)")
    if not has_cluster_key(websocket.headers.get("Authorization"), cluster.config.cluster.key):
        log.warning("cluster: refused a node from %s: wrong or missing cluster key", websocket.remote_addr)
        return _refuse(401, "UNAUTHORIZED", "wrong or missing cluster key")
    await websocket.accept()
    await cluster.coordinator.serve_node(websocket._get_current_object())

