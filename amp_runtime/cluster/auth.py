"""Credentials and marks on requests between peers.

Peer-to-peer requests (a forwarded `POST /task`, the `/ws/slots` watch) present
`[cluster] key` as `Authorization: Bearer <key>` when it is set; without it a forwarded task
carries the client's own Authorization header and a slots watch this process's `[auth] api_key`
(peers of one cluster share it).

`PeerGate` wraps the ASGI app of a peer:
- a request carrying the cluster key is presented to the routes as carrying the API key, so
  the cluster key is accepted like the API key on every route;
- it records what the request arrived with in `INCOMING` (a context variable, inherited by
  the tasks the request's handler spawns): the client's Authorization header (passed on when
  the task is forwarded without a cluster key) and whether another peer forwarded it (then it
  is never forwarded again). The tasks service stays unaware of either.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple

import trio

from ..core.http import key_matches, presented_credential

FORWARDED_HEADER = "X-Amp-Forwarded"  # set by the forwarding peer: run it here, never route it on
READY_WAIT_S = 5.0  # a request at start waits this long at most for the peer's first beat


class Incoming(NamedTuple):
    authorization: str | None = None
    forwarded: bool = False


NO_REQUEST = Incoming()  # a NamedTuple: immutable, safe to share as the default
INCOMING: ContextVar[Incoming] = ContextVar("amp_incoming_request", default=NO_REQUEST)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def has_cluster_key(header: str | None, cluster_key: str) -> bool:
    return bool(cluster_key) and key_matches(presented_credential(header), cluster_key)


class PeerGate:
    def __init__(self, app, *, cluster_key: str, api_key: str, ready: trio.Event | None = None):
        """`ready`: set once this peer is in the peer directory; until then a request waits
        (bounded), so whoever saw this peer answer finds it routable from any other peer."""
        self.app = app
        self._ready = ready
        self._cluster_key = cluster_key
        self._api_key = f"Bearer {api_key}".encode()
        self._swap = bool(cluster_key and api_key and cluster_key != api_key)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if self._ready is not None and not self._ready.is_set():
            with trio.move_on_after(READY_WAIT_S):
                await self._ready.wait()
        authorization, forwarded = None, False
        headers = scope["headers"]
        for index, (name, value) in enumerate(headers):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                if self._swap and has_cluster_key(authorization, self._cluster_key):
                    headers = list(headers)
                    headers[index] = (b"authorization", self._api_key)
                    scope = {**scope, "headers": headers}
            elif name == b"x-amp-forwarded":
                forwarded = True
        token = INCOMING.set(Incoming(authorization, forwarded))
        try:
            return await self.app(scope, receive, send)
        finally:
            INCOMING.reset(token)
