"""Helpers for the durable-workers tests: paths, keys and calls over HTTP."""

from __future__ import annotations

import httpx

from amp_runtime.durable.templates import template_id_for

COUNTER = template_id_for("counter")
KV = template_id_for("kv")
APPROVAL = template_id_for("approval")


def worker_path(template_id: str, name: str) -> str:
    return f"/v1/templates/{template_id}/workers/{name}"


async def create(client: httpx.AsyncClient, template_id: str, name: str, **extra) -> httpx.Response:
    return await client.post(f"/v1/templates/{template_id}/workers", json={"name": name, **extra})


async def new_key(client: httpx.AsyncClient, template_id: str, name: str) -> str:
    r = await client.post(worker_path(template_id, name) + "/key")
    assert r.status_code == 200, r.text
    return r.json()["value"]


async def call(client, template_id, name, function, params=(), key=None, **query) -> httpx.Response:
    """invoke-and-await with a fresh key unless one is given."""
    key = key or await new_key(client, template_id, name)
    return await client.post(
        worker_path(template_id, name) + "/invoke-and-await",
        params={"invocation-key": key, "function": function, **query},
        json={"params": list(params)},
    )


async def status(client, template_id, name) -> str:
    r = await client.get(worker_path(template_id, name))
    assert r.status_code == 200, r.text
    return r.json()["status"]


async def oplog(client, template_id, name) -> list[dict]:
    r = await client.get(worker_path(template_id, name) + "/oplog")
    assert r.status_code == 200, r.text
    return r.json()["entries"]


async def promise_ids(client, template_id, name) -> list[int]:
    return [e["oplogIdx"] for e in await oplog(client, template_id, name) if e["kind"] == "promise"]


async def start_suspended_request(nursery, client, name: str, results: list) -> None:
    """Start `approval.request` on worker `name` in `nursery` (its response goes to `results`)
    and return once the worker is Suspended on the request's promise."""
    from ..helpers import wait_until

    async def caller():
        results.append(await call(client, APPROVAL, name, "request", ["x"]))

    nursery.start_soon(caller)

    async def suspended():
        return await status(client, APPROVAL, name) == "Suspended"

    await wait_until(suspended)
