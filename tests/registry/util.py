"""Helpers for registry tests: reporting-API calls that unwrap the meta/data envelope."""

from __future__ import annotations

import httpx


async def call(client: httpx.AsyncClient, endpoint: str, body: dict | None = None, *, method: str = "POST",
               status: int = 200, **kwargs) -> dict:
    """`endpoint` with `body`; checks the status and the envelope; returns `data` (or the meta on errors)."""
    response = await client.request(method, f"/{endpoint}", json=body if body is not None else {}, **kwargs)
    assert response.status_code == status, (endpoint, response.status_code, response.text)
    payload = response.json()
    assert payload["meta"]["result_code"] == status
    assert payload["meta"]["endpoint"]["name"] == endpoint.rsplit("/", 1)[-1]
    return payload["data"] if status == 200 else payload["meta"]


async def worker_ids(client: httpx.AsyncClient, **filters) -> list[str]:
    data = await call(client, "workers.get_all", filters)
    return [w["id"] for w in data["workers"]]
