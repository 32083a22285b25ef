"""Limits everywhere: each comes from config, and exceeding it is a clear 4xx, never a 500.

Body size and JSON depth are checked on every operation that takes a body (from `/openapi`);
ids, tags, open streams and queue length on the routes that own them, with small limits.
"""

from __future__ import annotations

import re

import httpx

_PARAM = re.compile(r"\{[^}]+\}")


def body_operations(spec: dict) -> list[tuple[str, str]]:
    return [(method, _PARAM.sub("x", path)) for path, ops in spec["paths"].items()
            for method, op in ops.items() if "requestBody" in op]


async def test_body_size_and_json_depth_on_every_operation_with_a_body(server_factory):
    srv = await server_factory(http={"max_body_bytes": 4096, "max_json_depth": 8})
    spec = (await srv.client.get("/openapi")).json()
    operations = body_operations(spec)
    assert len(operations) >= 8
    big = b'{"pad": "' + b"x" * 5000 + b'"}'
    deep = b'{"a": ' * 20 + b"1" + b"}" * 20
    wrong = []
    for method, path in operations:
        response = await srv.client.request(method.upper(), path, content=big,
                                            headers={"Content-Type": "application/json"})
        if response.status_code != 413:
            wrong.append(f"{method.upper()} {path} with a 5000-byte body: {response.status_code}, want 413")
        response = await srv.client.request(method.upper(), path, content=deep,
                                            headers={"Content-Type": "application/json"})
        if response.status_code != 400:
            wrong.append(f"{method.upper()} {path} with 20-deep JSON: {response.status_code}, want 400")
    assert not wrong, "\n".join(wrong)


async def test_id_length_and_tag_count(server_factory):
    srv = await server_factory(http={"max_id_length": 16, "max_tags": 3})
    c = srv.client
    long_id = "w" + "x" * 20
    assert (await c.get(f"/workers/{long_id}")).status_code == 400
    register = await c.post("/workers.register", json={"worker": long_id})
    assert register.status_code == 400, register.text
    too_many = await c.post("/workers.register", json={"worker": "w1", "tags": ["a", "b", "c", "d"]})
    assert too_many.status_code == 400, too_many.text
    ok = await c.post("/workers.register", json={"worker": "w1", "tags": ["a", "b", "c"]})
    assert ok.status_code == 200, ok.text
    templates = (await c.get("/v1/templates")).json()
    counter = next(t["templateId"] for t in templates if t["name"] == "counter")
    named = await c.post(f"/v1/templates/{counter}/workers", json={"name": "n" * 20})
    assert named.status_code == 400, named.text


async def test_open_streams_limit(server_factory):
    srv = await server_factory(http={"max_open_streams": 2})
    body = {"function": "count", "input": {"n": 1000, "delay_ms": 50}, "contract": 1, "mode": "stream"}
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as a, httpx.AsyncClient(base_url=srv.url, timeout=30) as b:
        async with a.stream("POST", "/task", json=body) as first, b.stream("POST", "/task", json=body) as second:
            assert first.status_code == second.status_code == 200
            third = await srv.client.post("/task", json=body)
            assert third.status_code == 429, third.text


async def test_queue_limit_answers_429_with_retry_after(server_factory):
    srv = await server_factory(workers=[{"id": "w-01", "slots": 1, "max_queue": 2}], webhook={"allow_private": True})
    hook = {"url": "http://127.0.0.1:9/hook"}
    statuses = []
    for _ in range(5):
        response = await srv.client.post("/task", json={"function": "sleep", "input": {"ms": 3000}, "contract": 1,
                                                        "mode": "webhook", "webhook": hook})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers.get("Retry-After"), response.headers
    # One running, two queued, the rest refused (webhook mode answers 202 without waiting).
    assert statuses == [202, 202, 202, 429, 429], statuses


async def test_every_operation_with_a_body_documents_413_and_400(server):
    spec = (await server.client.get("/openapi")).json()
    missing = [f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method, op in ops.items()
               if "requestBody" in op and not {"400", "413"} <= set(op["responses"])]
    assert not missing, f"operations with a body that do not document 400 and 413: {missing}"
