"""The cluster key on the wire: nodes and the coordinator present it as `Bearer <key>`.

`ClusterKeyAuth` wraps the ASGI app of a cluster process so the cluster key is accepted like
the API key on every route (the coordinator forwards tasks to a node's `/task` and watches its
`/ws/slots`; a node reports to the coordinator's `/workers.*`): a request carrying the cluster
key is presented to the routes as carrying the API key. The node channel (`/ws/cluster/`)
checks the cluster key itself and is left alone.
"""

from __future__ import annotations

from ..core.http import key_matches, presented_credential

CHANNEL_PREFIX = "/ws/cluster/"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def has_cluster_key(header: str | None, cluster_key: str) -> bool:
    return bool(cluster_key) and key_matches(presented_credential(header), cluster_key)


class ClusterKeyAuth:
    def __init__(self, app, *, cluster_key: str, api_key: str):
        self.app = app
        self._cluster_key = cluster_key
        self._api_key = f"Bearer {api_key}".encode()
        self._enabled = bool(cluster_key and api_key and cluster_key != api_key)

    async def __call__(self, scope, receive, send):
        if self._enabled and scope["type"] in ("http", "websocket") and not scope["path"].startswith(CHANNEL_PREFIX):
            headers = scope["headers"]
            for index, (name, value) in enumerate(headers):
                if name == b"authorization" and has_cluster_key(value.decode("latin-1"), self._cluster_key):
                    headers = list(headers)
                    headers[index] = (b"authorization", self._api_key)
                    scope = {**scope, "headers": headers}
                    break
        return await self.app(scope, receive, send)
