"""The tasks API end to end on a real socket."""

import json
import signal

import httpx
import msgspec
import trio

from ..helpers import spawn_server, wait_until
from . import fns
from .receiver import serve_webhooks

CALL = {"contract": 1}


async def post_task(client, function, input=None, **extra):
    return await client.post("/task", json={"function": function, "input": input or {}, **CALL, **extra})


async def test_sync_hello(server):
    r = await post_task(server.client, "hello", {"name": "Andera"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "completed" and body["success"] is True
    assert body["result"] == "Hello, Andera!" and body["duration_ms"] >= 0 and body["id"]


async def test_failure_is_a_task_outcome_without_traceback(server):
    r = await post_task(server.client, "fail", {"message": "nope"})
    assert r.status_code == 500
    body = r.json()
    assert body["status"] == "failed" and body["success"] is False
    assert body["error"] == {"type": "RuntimeError", "message": "nope"}


async def test_a_result_that_is_not_json_fails_the_task_not_the_server(server):
    r = await post_task(server.client, "test_not_json")
    assert r.status_code == 500
    body = r.json()
    assert body["status"] == "failed" and body["error"]["type"] == "ResultNotJSON" and "result" not in body
    assert (await server.client.get(f"/tasks/{body['id']}")).json()["error"]["type"] == "ResultNotJSON"
    r = await server.client.post("/tasks", json=[{"function": "test_not_json", "input": {}, **CALL},
                                                 {"function": "hello", "input": {}, **CALL}])
    lines = sorted((json.loads(line) for line in r.text.splitlines()), key=lambda line: line["index"])
    assert [(line["status"], line["http_status"]) for line in lines] == [("failed", 500), ("completed", 200)]
    r = await post_task(server.client, "test_not_json", {"almost": True})  # a set encodes as a list
    assert r.status_code == 200 and sorted(r.json()["result"]["set"]) == [1, 2]


async def test_timeout_is_504(server):
    r = await post_task(server.client, "test_slow")
    assert r.status_code == 504 and r.json()["status"] == "timed_out"


async def test_validation_lists_every_problem(server):
    r = await server.client.post("/task", json={
        "function": "hello", "contract": 7, "mode": "webhook", "priority": 5})
    assert r.status_code == 400
    message = r.json()["error_message"]
    for fragment in ("webhook.url", "contract"):
        assert fragment in message
    # Out of the struct's ranges: every field is named.
    r = await server.client.post("/task", json={"function": "hello", "contract": -1, "priority": 0})
    assert r.status_code == 400 and "$.priority" in r.json()["error_message"] and "$.contract" in r.json()["error_message"]
    r = await server.client.post("/task", json={"function": "hello", "contract": 1, "mode": "stream"})
    assert r.status_code == 400 and "does not support streaming" in r.json()["error_message"]
    r = await server.client.post("/task", json={"function": "hello", "contract": 1, "mode": "carrier-pigeon"})
    assert r.status_code == 400 and "unknown mode" in r.json()["error_message"]
    r = await server.client.post("/task", json={"function": "hello", "contract": 1, "priority": "high"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_REQUEST"
    r = await server.client.post("/task", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error_code"] == "MALFORMED_JSON"


async def test_unknown_function_is_404(server):
    r = await post_task(server.client, "no_such_function")
    assert r.status_code == 404 and r.json()["error_code"] == "FUNCTION_NOT_FOUND"


async def test_body_over_the_limit_is_413(server_factory):
    srv = await server_factory(http={"max_body_bytes": 1000})
    r = await srv.client.post("/task", json={"function": "echo", "contract": 1, "input": "x" * 2000})
    assert r.status_code == 413 and r.json()["error_code"] == "PAYLOAD_TOO_LARGE"
    await srv.client.aclose()


async def test_stream_events_then_end(server):
    events = []
    async with server.client.stream("POST", "/task", json={
            "function": "count", "input": {"n": 3}, "mode": "stream", **CALL}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line:
                events.append(line)
    assert events[:3] == ['data: {"i":0}', 'data: {"i":1}', 'data: {"i":2}']
    assert events[3] == "event: end"
    assert json.loads(events[4][len("data: "):])["status"] == "completed"


async def test_a_streamed_item_that_is_not_json_fails_the_task_as_a_result_would(server):
    """Streamed or answered at once (sync), the same function fails the same way: ResultNotJSON."""
    events = []
    async with server.client.stream("POST", "/task", json={
            "function": "test_stream_not_json", "mode": "stream", **CALL}) as r:
        async for line in r.aiter_lines():
            if line:
                events.append(line)
    assert events[0] == 'data: {"ok":1}' and events[1] == "event: error"
    outcome = json.loads(events[2][len("data: "):])
    assert outcome["status"] == "failed" and outcome["error"]["type"] == "ResultNotJSON", outcome
    r = await post_task(server.client, "test_stream_not_json")
    assert r.status_code == 500 and r.json()["error"]["type"] == "ResultNotJSON"


async def test_disconnected_stream_frees_its_slot(server_factory):
    srv = await server_factory(workers=[{"id": "solo", "slots": 1}])
    async with srv.client.stream("POST", "/task", json={
            "function": "test_endless", "mode": "stream", **CALL}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                break
        assert srv.runtime.services.tasks.workers["solo"].state.free == 0
    await wait_until(lambda: srv.runtime.services.tasks.workers["solo"].state.free == 1, timeout=5)
    r = await post_task(srv.client, "echo", {"after": True})
    assert r.json()["result"] == {"after": True}
    await srv.client.aclose()


async def test_priority_order_over_http(server_factory):
    srv = await server_factory(workers=[{"id": "one", "slots": 1}])
    finished: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post_task, srv.client, "test_gate", {"gate": "http-block", "tag": "blocker"})
        await wait_until(lambda: srv.runtime.services.tasks.workers["one"].state.free == 0)

        async def submit(tag, priority):
            r = await post_task(srv.client, "test_gate", {"gate": "http-open", "tag": tag}, priority=priority)
            finished.append(r.json()["result"])

        for i, prio in enumerate([10, None, 1, 5, 1]):
            nursery.start_soon(submit, f"p{prio}-{i}", prio)
            await wait_until(lambda n=i + 1: srv.runtime.services.tasks.workers["one"].state.queued == n)
        fns.gate("http-open").set()
        fns.gate("http-block").set()
    assert finished == ["p1-2", "p1-4", "p5-3", "p10-0", "pNone-1"]
    await srv.client.aclose()


async def test_full_queue_is_429_with_retry_after(server_factory):
    srv = await server_factory(workers=[{"id": "tiny", "slots": 1, "max_queue": 1}])
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(post_task, srv.client, "test_gate", {"gate": "full"})
        await wait_until(lambda: srv.runtime.services.tasks.workers["tiny"].state.queued == 1
                         and srv.runtime.services.tasks.workers["tiny"].state.free == 0)
        r = await post_task(srv.client, "echo", {})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["error_code"] == "QUEUE_FULL"
        fns.gate("full").set()
    await srv.client.aclose()


async def test_maintenance_refuses_new_and_finishes_running(server):
    async with trio.open_nursery() as nursery:
        result = {}

        async def running():
            result["r"] = await post_task(server.client, "test_gate", {"gate": "maint", "tag": "kept"})

        nursery.start_soon(running)
        await wait_until(lambda: server.runtime.services.tasks.workers["worker-01"].state.free == 9)
        assert (await server.client.post("/off")).json()["maintenance"] is True
        r = await post_task(server.client, "echo", {})
        assert r.status_code == 503 and r.json()["error_code"] == "MAINTENANCE"
        assert (await server.client.get("/health")).json()["status"] == "maintenance"
        fns.gate("maint").set()
    assert result["r"].json()["result"] == "kept"
    await server.client.post("/on")
    assert (await post_task(server.client, "echo", {"x": 1})).status_code == 200


async def start_receiver(nursery, fail_first: int):
    """A tiny webhook receiver: answers 500 to the first `fail_first` calls, then 200."""
    calls = []
    delivered = trio.Event()

    def answer(scope, body: bytes) -> int:
        calls.append((dict((k.decode(), v.decode()) for k, v in scope["headers"]), body))
        if len(calls) <= fail_first:
            return 500
        delivered.set()
        return 200

    return await serve_webhooks(nursery, answer), calls, delivered


async def test_webhook_delivers_with_retries(server_factory, nursery):
    url, calls, delivered = await start_receiver(nursery, fail_first=1)
    srv = await server_factory(webhook={"allow_private": True, "base_delay_s": 0.01,
                                        "headers": {"X-Default": "d", "X-Over": "default"}})
    r = await post_task(srv.client, "hello", {"name": "W"}, mode="webhook",
                        webhook={"url": url + "/hook", "headers": {"X-Over": "request"}})
    assert r.status_code == 202
    task_id = r.json()["id"]
    assert r.json()["status"] == "queued"
    with trio.fail_after(10):
        await delivered.wait()
    assert len(calls) == 2
    headers, body = calls[-1]
    assert headers["x-default"] == "d" and headers["x-over"] == "request"
    assert msgspec.json.decode(body) == {"id": task_id, "status": "completed", "success": True,
                                          "result": "Hello, W!", "duration_ms": msgspec.json.decode(body)["duration_ms"]}

    async def recorded():
        view = (await srv.client.get(f"/tasks/{task_id}")).json()
        return view.get("webhook_status") == "delivered" and view

    await wait_until(recorded, timeout=5)
    view = (await srv.client.get(f"/tasks/{task_id}")).json()
    assert [d.get("status_code") for d in view["deliveries"]] == [500, 200]
    await srv.client.aclose()


async def test_a_webhook_task_whose_result_is_not_json_delivers_its_failure(server_factory, nursery):
    url, calls, delivered = await start_receiver(nursery, fail_first=0)
    srv = await server_factory(webhook={"allow_private": True, "base_delay_s": 0.01})
    r = await post_task(srv.client, "test_not_json", mode="webhook", webhook={"url": url + "/hook"})
    assert r.status_code == 202
    task_id = r.json()["id"]
    with trio.fail_after(10):
        await delivered.wait()
    body = msgspec.json.decode(calls[-1][1])
    assert (body["id"], body["status"], body["error"]["type"]) == (task_id, "failed", "ResultNotJSON")

    async def recorded():
        view = (await srv.client.get(f"/tasks/{task_id}")).json()
        return view.get("webhook_status") == "delivered" and view

    await wait_until(recorded, timeout=5)
    view = (await srv.client.get(f"/tasks/{task_id}")).json()
    assert view["status"] == "failed" and view["error"]["type"] == "ResultNotJSON" and "result" not in view
    assert [d.get("status_code") for d in view["deliveries"]] == [200]
    await srv.client.aclose()


async def test_webhook_to_private_address_refused_by_default(server):
    r = await post_task(server.client, "hello", {}, mode="webhook", webhook={"url": "http://127.0.0.1:9/x"})
    assert r.status_code == 400 and r.json()["error_code"] == "WEBHOOK_TARGET_REFUSED"
    r = await post_task(server.client, "hello", {}, mode="webhook", webhook={"url": "ftp://example.com/x"})
    assert r.status_code == 400 and "http or https" in r.json()["error_message"]


async def test_get_and_delete_task(server):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post_task, server.client, "test_gate", {"gate": "never-opens"})
        worker = server.runtime.services.tasks.workers["worker-01"]
        await wait_until(lambda: worker.running_ids())
        task_id = worker.running_ids()[0]
        view = (await server.client.get(f"/tasks/{task_id}")).json()
        assert view["status"] == "running" and view["function"] == "test_gate"
        r = await server.client.delete(f"/tasks/{task_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await server.client.delete(f"/tasks/{task_id}")
    assert r.status_code == 409
    assert (await server.client.get("/tasks/0123abc")).status_code == 404
    assert (await server.client.get("/tasks/bad-id!")).status_code == 400


async def test_health_public_and_authenticated(server_factory):
    srv = await server_factory(auth={"api_key": "sekrit"}, tasks={"tags": ["gpu=none"]})
    anonymous = httpx.AsyncClient(base_url=srv.url)
    public = (await anonymous.get("/health")).json()
    assert set(public) == {"status", "slots", "queued"}
    assert public["slots"] == {"total": 10, "busy": 0, "free": 10, "abandoned": 0}
    full = (await srv.client.get("/health")).json()
    assert full["version"] and full["tags"]["gpu"] == "none" and full["tags"]["python"]
    assert {f["name"] for f in full["functions"]} >= {"hello", "echo", "sleep", "count", "fail"}
    assert full["workers"][0]["id"] == "worker-01"
    assert (await anonymous.post("/task", json={"function": "echo", **CALL})).status_code == 401
    assert (await anonymous.post("/off")).status_code == 401
    assert (await anonymous.get("/logs")).status_code == 401
    bearer = await anonymous.get("/logs", headers={"Authorization": "Bearer sekrit"})
    assert bearer.status_code == 200 and isinstance(bearer.json()["logs"], list)
    await anonymous.aclose()
    await srv.client.aclose()


async def test_logs_hold_recent_lines(server):
    await server.client.post("/off")
    lines = (await server.client.get("/logs")).json()["logs"]
    assert lines and all(isinstance(line, str) for line in lines)
    assert any("amp_runtime" in line for line in lines)


async def test_ws_slots_pushes_on_connect_and_on_change(server):
    from trio_websocket import open_websocket_url

    ws_url = server.url.replace("http://", "ws://") + "/ws/slots"
    async with open_websocket_url(ws_url) as ws:
        with trio.fail_after(5):
            first = json.loads(await ws.get_message())
        assert first == {"worker": "worker-01", "free": 10, "total": 10, "queued": 0, "maintenance": False}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(post_task, server.client, "test_gate", {"gate": "ws"})
            with trio.fail_after(5):
                while json.loads(await ws.get_message())["free"] != 9:
                    pass
            fns.gate("ws").set()
        await ws.send_message("ping")
        with trio.fail_after(5):
            assert "free" in json.loads(await ws.get_message())


async def test_openapi_lists_every_route_and_validates(server):
    from openapi_spec_validator import validate

    doc = (await server.client.get("/openapi")).json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    app = server.runtime  # every documented family route is in the document
    for path, method in [("/task", "post"), ("/tasks/{task_id}", "get"), ("/tasks/{task_id}", "delete"),
                         ("/health", "get"), ("/logs", "get"), ("/on", "post"), ("/off", "post"),
                         ("/openapi", "get"), ("/docs", "get")]:
        assert method in doc["paths"][path], (path, method)
    assert "TaskRequest" in doc["components"]["schemas"]
    assert app is not None


async def test_sigterm_lets_a_slow_request_finish_and_exits_0(nursery, tmp_path):
    proc = await spawn_server(nursery, tmp_path / "d")
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
        result = {}

        async def slow():
            result["r"] = await client.post("/task", json={"function": "sleep", "input": {"ms": 1500}, **CALL})

        async with trio.open_nursery() as inner:
            inner.start_soon(slow)
            async def health_busy():
                return (await client.get("/health")).json()["slots"]["busy"] == 1
            await wait_until(health_busy, timeout=10)
            proc.send_signal(signal.SIGTERM)
    assert result["r"].status_code == 200 and result["r"].json()["result"] == {"slept_ms": 1500}
    assert await proc.wait() == 0


async def test_json_nested_too_deep_is_400(server_factory):
    srv = await server_factory(http={"max_json_depth": 8})
    deep = "[" * 20 + "]" * 20
    r = await srv.client.post("/task", content=f'{{"function": "echo", "contract": 1, "input": {deep}}}',
                              headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error_code"] == "JSON_TOO_DEEP"
    fine = '{"function": "echo", "contract": 1, "input": {"text": "[[[[[[[[[[[[[[[[[[[[[["}}'
    r = await srv.client.post("/task", content=fine, headers={"content-type": "application/json"})
    assert r.status_code == 200
    await srv.client.aclose()
