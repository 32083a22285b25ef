"""Admission of `POST /task` on a real socket: hostile input refused at the door, the stream
limit, typed function inputs, webhook header merge, the 202 body and `X-Task-Id`."""

import httpx
import trio

from ..helpers import wait_until
from . import fns  # noqa: F401  (test functions)
from .receiver import start_receiver

CALL = {"contract": 1}

HOSTILE_HEADERS = [
    {"X-Ü": "1"},  # the reproduction: non-ASCII name
    {"X-Emoji-😀": "1"},
    {"X Space": "1"},
    {"": "1"},
    {"X:Colon": "1"},
    {"X-A\r\nInjected": "1"},
    {"X-A": "a\r\nInjected: 1"},
    {"X-A": "a\nb"},
    {"X-A": "nul\x00"},
    {"X-A": "del\x7f"},
    {"X-A": "euro €"},  # outside latin-1
    {"X-A": " leading space"},  # h11 refuses these on every delivery attempt (the audit's finding)
    {"X-A": "trailing space "},
    {"X-A": "\tleading tab"},
    {"X-A": "trailing tab\t"},
    {"X-A": "vertical\x0btab"},
    {"X-A": "form\x0cfeed"},
    {"X-A": "x" * 9000},
    {"X-" + "n" * 300: "1"},
    {"Content-Length": "5"},
    {"host": "elsewhere"},
    {f"X-H{i}": "v" for i in range(65)},
]
HOSTILE_URLS = ["http://ü.example/x", "http://127.0.0.1:99999/x", "http://host/x y", "http://[::1/x",
                "http://host/\r\nx", "javascript:alert(1)", "http://" + "a" * 3000 + "/x"]


async def webhook_task(client, url, headers=None, input=None):
    return await client.post("/task", json={"function": "echo", "input": input or {"x": 1}, "mode": "webhook",
                                            "webhook": {"url": url, "headers": headers or {}}, **CALL})


async def test_hostile_webhook_input_is_refused_and_harms_no_delivery(server_factory, nursery):
    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True, "base_delay_s": 0.01})
    accepted = []
    for i in range(3):  # deliveries in flight around the hostile requests
        r = await webhook_task(srv.client, receiver.url, input={"good": i})
        assert r.status_code == 202
        accepted.append(r.json()["id"])
    for headers in HOSTILE_HEADERS + [{"X-Ü": "1"}] * 7:
        r = await webhook_task(srv.client, receiver.url, headers)
        assert r.status_code == 400, (headers, r.text)
        assert r.json()["error_code"] == "VALIDATION_ERROR" and "webhook.headers" in r.json()["error_message"]
    for url in HOSTILE_URLS:
        r = await webhook_task(srv.client, url)
        assert r.status_code == 400, (url, r.text)
        assert "webhook.url" in r.json()["error_message"]
    r = await webhook_task(srv.client, receiver.url, {"X-Ü": "1", "X-B": "a\nb"})  # every problem listed
    message = r.json()["error_message"]
    assert "'X-Ü'" in message and '`$.webhook.headers["X-B"]`' in message
    r = await webhook_task(srv.client, receiver.url, {"X-Fine": "latin-1 é\tok"}, input={"good": 3})
    assert r.status_code == 202
    accepted.append(r.json()["id"])
    await receiver.wait_for(len(accepted))
    assert set(receiver.by_task()) == set(accepted)
    assert all(body["status"] == "completed" for body in receiver.bodies())
    assert (await srv.client.get("/health")).json()["status"] == "ok"
    assert (await srv.client.post("/task", json={"function": "echo", "input": 1, **CALL})).json()["result"] == 1
    await srv.client.aclose()


async def test_every_header_value_admitted_is_delivered_and_every_refusal_names_its_path(server_factory, nursery):
    """The class, not the instances: a value the sender's HTTP library would refuse must never
    get a 202. Every latin-1 control, space and boundary character at the start, inside and at
    the end of a value is either refused with its JSON path or delivered as sent."""
    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True, "base_delay_s": 0.01, "attempts": 1})
    chars = [chr(c) for c in [*range(0x00, 0x21), 0x7E, 0x7F, *range(0x80, 0xA2), 0xFF]]
    accepted, refused = {}, 0
    for ch in chars:
        for value in (f"{ch}v", f"v{ch}v", f"v{ch}"):
            r = await webhook_task(srv.client, receiver.url, {"X-Probe": value})
            if r.status_code == 202:
                accepted[r.json()["id"]] = value
                continue
            assert r.status_code == 400, (value, r.text)
            assert r.json()["error_message"].count('`$.webhook.headers["X-Probe"]`') == 1, r.text
            refused += 1
    assert refused and accepted
    await receiver.wait_for(len(accepted))
    for headers, body in receiver.calls:
        sent = dict((k.lower(), v) for k, v in headers)
        assert sent["x-probe"] == accepted[body["id"]]
    for task_id in accepted:
        assert (await srv.client.get(f"/tasks/{task_id}")).json()["webhook_status"] == "delivered"
    await srv.client.aclose()


async def test_headers_the_sender_sets_are_refused_as_such(server_factory, nursery):
    """Content-Length, Host and the hop-by-hop headers are valid tokens the sender's HTTP client
    owns: refused for that reason, whatever the value, never as "not an HTTP token"."""
    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True})
    for name in ("Content-Length", "host", "Transfer-Encoding", "Connection"):
        for value in ("", "12", "x"):
            r = await webhook_task(srv.client, receiver.url, {name: value})
            assert r.status_code == 400, (name, value, r.text)
            message = r.json()["error_message"]
            assert "set by the sender" in message and "HTTP token" not in message, (name, value, message)
    await srv.client.aclose()


async def test_other_fields_are_bounded_at_admission(server):
    long = "x" * 100_000
    r = await server.client.post("/task", json={"function": long, **CALL})
    assert r.status_code == 404 and len(r.text) < 2000
    r = await server.client.post("/task", json={"function": "echo", "group": long, "worker": long, **CALL})
    assert r.status_code == 400 and len(r.text) < 4000
    message = r.json()["error_message"]
    assert "group:" in message and "worker:" in message
    r = await server.client.post("/task", json={"function": "echo", "mode": long, **CALL})
    assert r.status_code == 400 and len(r.text) < 2000


async def test_concurrent_stream_admission_at_the_limit(server_factory):
    limit = 2
    srv = await server_factory(http={"max_open_streams": limit}, workers=[{"id": "w", "slots": 10}])
    statuses: list[int] = []
    answered = trio.Event()
    total = 6

    async def open_stream(client):
        async with client.stream("POST", "/task", json={"function": "test_endless", "mode": "stream", **CALL}) as r:
            statuses.append(r.status_code)
            if len(statuses) == total:
                answered.set()
            await answered.wait()  # hold the stream open until every request has its answer

    clients = [httpx.AsyncClient(base_url=srv.url, timeout=30) for _ in range(total)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(open_stream, client)
    assert sorted(statuses) == [200] * limit + [429] * (total - limit)
    await wait_until(lambda: srv.runtime.services.tasks.open_streams == 0, timeout=10)  # released in the finally
    async with clients[0].stream("POST", "/task", json={"function": "count", "input": {"n": 1},
                                                         "mode": "stream", **CALL}) as r:
        assert r.status_code == 200
    for client in clients:
        await client.aclose()
    await srv.client.aclose()


async def test_typed_inputs_are_decoded_and_checked_at_admission(server):
    r = await server.client.post("/task", json={"function": "test_resize", "input": {"width": 3, "height": 4}, **CALL})
    assert r.status_code == 200 and r.json()["result"] == {"area": 12, "typed": True}
    r = await server.client.post("/task", json={"function": "test_resize", "input": {"width": 0, "height": 4}, **CALL})
    assert r.status_code == 400 and "$.input.width" in r.json()["error_message"]
    r = await server.client.post("/task", json={"function": "test_resize", "input": {"width": 3}, **CALL})
    assert r.status_code == 400 and "height" in r.json()["error_message"]
    r = await server.client.post("/task", json={"function": "hello", "input": "str", **CALL})  # was a 500
    assert r.status_code == 400 and "$.input" in r.json()["error_message"]
    r = await server.client.post("/task", json={"function": "sleep", "input": {"ms": "soon"}, "contract": 7})
    message = r.json()["error_message"]
    assert r.status_code == 400 and "$.input.ms" in message and "contract" in message  # listed together
    r = await server.client.post("/task", json={"function": "echo", "input": "any JSON", **CALL})
    assert r.status_code == 200 and r.json()["result"] == "any JSON"  # untyped keeps taking anything
    r = await server.client.post("/task", json={"function": "hello", **CALL})  # omitted: the defaults
    assert r.json()["result"] == "Hello, world!"


async def test_openapi_documents_each_function_input(server):
    doc = (await server.client.get("/openapi")).json()
    body = doc["paths"]["/task"]["post"]["requestBody"]["content"]["application/json"]
    schemas = doc["components"]["schemas"]
    assert schemas["ResizeInput"]["required"] == ["width", "height"]
    assert body["examples"]["test_resize"]["value"] == {
        "function": "test_resize", "contract": 1, "input": {"width": 1, "height": 1, "keep_ratio": True}}
    assert body["examples"]["echo"]["value"]["input"] == {}
    functions = doc["paths"]["/task"]["post"]["x-functions"]
    assert functions["hello"]["input"] == {"$ref": "#/components/schemas/HelloInput"}
    assert functions["echo"]["input"] == {} and functions["count"]["streaming"] is True


async def test_webhook_headers_merge_case_insensitively_and_202_says_queued(server_factory, nursery):
    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True, "headers": {
        "Authorization": "Bearer default", "X-Default": "d", "content-type": "text/plain"}})
    r = await webhook_task(srv.client, receiver.url, {"authorization": "Bearer mine", "x-extra": "e"})
    assert r.status_code == 202
    assert r.json() == {"id": r.json()["id"], "status": "queued"}
    await receiver.wait_for(1)
    headers, body = receiver.calls[0]
    names = [name.lower() for name, _ in headers]
    values = {name.lower(): value for name, value in headers}
    assert names.count("authorization") == 1 and values["authorization"] == "Bearer mine"
    assert names.count("content-type") == 1 and values["content-type"] == "application/json"
    assert values["x-default"] == "d" and values["x-extra"] == "e"
    assert values["x-amp-task-id"] == r.json()["id"] and values["x-amp-delivery-attempt"] == "1"
    assert body["id"] == r.json()["id"]
    await srv.client.aclose()


async def test_sync_responses_carry_the_task_id(server):
    r = await server.client.post("/task", json={"function": "echo", "input": {"a": 1}, **CALL})
    assert r.status_code == 200 and r.headers["X-Task-Id"] == r.json()["id"]
    r = await server.client.post("/task", json={"function": "fail", "input": {}, **CALL})
    assert r.status_code == 500 and r.headers["X-Task-Id"] == r.json()["id"]
