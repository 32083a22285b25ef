"""Relaying a durable-workers request to the peer that owns the instance (PostgreSQL peers).

A thin proxy: the request goes out as it came (method, path, query, body, the caller's
Authorization or the cluster key) and the owner's answer comes back as is. A forwarded request
carries `FORWARDED_HEADER`, and a peer never forwards such a request again (no loops).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

FORWARDED_HEADER = "X-Amp-Forwarded-By"
_PASSED_HEADERS = ("content-type", "retry-after")


class OwnedElsewhere(Exception):
    """The instance is run by another live peer: the request belongs there."""

    def __init__(self, worker: str, owner: str, url: str):
        super().__init__(f"worker {worker} is run by peer {url}")
        self.worker = worker
        self.owner = owner
        self.url = url


class OwnerUnreachable(Exception):
    """The owner took no connection: it saw nothing of the request."""


class OwnerFailed(Exception):
    """The owner took the request and broke or hung before answering: it may have acted on it."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The parts of the incoming request that are relayed."""

    method: str
    path: str  # with the query string
    body: bytes
    authorization: str | None


@dataclass(frozen=True, slots=True)
class Relayed:
    status: int
    body: bytes
    headers: dict[str, str]


class Relay:
    """One keep-alive httpx client for every owner; `answer_s` bounds a relayed answer (the
    owner bounds its own work: invoke-and-await answers 504 at `invoke_timeout_s`)."""

    def __init__(self, *, peer_id: str, cluster_key: str, connect_timeout_s: float, answer_s: float):
        self.peer_id = peer_id
        self.cluster_key = cluster_key
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(answer_s, connect=connect_timeout_s))

    async def send(self, base_url: str, outgoing: Outgoing) -> Relayed:
        headers = {FORWARDED_HEADER: self.peer_id, "Content-Type": "application/json"}
        authorization = f"Bearer {self.cluster_key}" if self.cluster_key else outgoing.authorization
        if authorization:
            headers["Authorization"] = authorization
        try:
            response = await self.client.request(
                outgoing.method, base_url.rstrip("/") + outgoing.path, content=outgoing.body, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise OwnerUnreachable(f"{base_url}: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise OwnerFailed(f"{base_url}: {type(exc).__name__}") from None
        passed = {name: response.headers[name] for name in _PASSED_HEADERS if name in response.headers}
        return Relayed(response.status_code, response.content, passed)

    async def aclose(self) -> None:
        await self.client.aclose()
