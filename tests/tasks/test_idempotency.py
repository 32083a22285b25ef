"""`Idempotency-Key` on `POST /task`, through HTTP on a real socket."""

import httpx
import pytest
import trio

from amp_runtime.tasks.idempotency import IdempotencyTable, parse_key
from amp_runtime.tasks.errors import Rejected

from ..helpers import wait_until
from . import fns
from ..pg import on_both_stores
from .test_durability import start_receiver

CALL = {"contract": 1}


def body(function, input=None, **extra):
    return {"function": function, "input": input or {}, **CALL, **extra}


async def post(client, payload, key=None, **kwargs):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await client.post("/task", json=payload, headers=headers, **kwargs)


async def test_concurrent_duplicates_run_once(server):
    tag = "idem-concurrent"
    payload = body("test_gate", {"gate": tag, "tag": tag})
    answers = []

    async def send():
        answers.append(await post(server.client, payload, key="k-concurrent"))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(send)
        await wait_until(lambda: tag in fns.STARTED)
        await wait_until(lambda: len(server.runtime.services.tasks.idempotency) == 1)
        fns.gate(tag).set()
    assert fns.STARTED.count(tag) == 1  # one run for six requests
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["id"] for r in answers}) == 1
    assert all(r.json()["result"] == tag for r in answers)
    assert all(r.headers["X-Task-Id"] == answers[0].json()["id"] for r in answers)
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 5


async def test_same_key_same_body_returns_the_recorded_result(server):
    first = await post(server.client, body("echo", {"a": 1, "b": [1, 2]}), key="k-same")
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    # The same request written differently (key order, whitespace) is the same body.
    again = await server.client.post("/task", headers={"Idempotency-Key": '"k-same"', "Content-Type": "application/json"},
                                     content=b'{ "input": {"b": [1, 2], "a": 1}, "contract": 1, "function": "echo" }')
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    fresh = await post(server.client, body("echo", {"a": 1, "b": [1, 2]}), key="k-other")
    assert fresh.json()["id"] != first.json()["id"]


async def test_failed_outcome_is_recorded_too(server):
    first = await post(server.client, body("fail", {"message": "once"}), key="k-fail")
    again = await post(server.client, body("fail", {"message": "once"}), key="k-fail")
    assert first.status_code == again.status_code == 500 and again.json()["id"] == first.json()["id"]


async def test_same_key_other_body_is_422(server):
    assert (await post(server.client, body("echo", {"n": 1}), key="k-mismatch")).status_code == 200
    for other in (body("echo", {"n": 2}), body("hello", {"n": 1}), body("echo", {"n": 1}, priority=3)):
        r = await post(server.client, other, key="k-mismatch")
        assert r.status_code == 422 and r.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED", r.text


@pytest.mark.parametrize("key", ["", '""', "x" * 256, "caf\u00e9", '"a\\qb"', '"unterminated\\"', '"a"b"'])
async def test_malformed_key_is_400_and_runs_nothing(server, key):
    r = await server.client.post("/task", json=body("echo", {"k": 1}),
                                 headers=[(b"Idempotency-Key", key.encode("utf-8"))])
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_IDEMPOTENCY_KEY", (key, r.text)
    assert len(server.runtime.services.tasks.idempotency) == 0


async def test_refused_request_leaves_the_key_free(server):
    r = await post(server.client, body("echo", mode="webhook"), key="k-refused")  # no webhook url
    assert r.status_code == 400
    assert (await post(server.client, body("echo", {"x": 1}), key="k-refused")).status_code == 200


async def test_cancel_by_key(server):
    tag = "idem-cancel"
    result = {}

    async def run():
        result["r"] = await post(server.client, body("test_gate", {"gate": tag, "tag": tag}), key="k-cancel")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await wait_until(lambda: tag in fns.STARTED)
        r = await server.client.delete("/task", headers={"Idempotency-Key": "k-cancel"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert result["r"].status_code == 409 and result["r"].json()["status"] == "cancelled"
    assert (await server.client.delete("/task", headers={"Idempotency-Key": "k-unknown"})).status_code == 404
    assert (await server.client.delete("/task")).status_code == 400


async def test_stream_duplicate_while_running_is_409_then_replays_the_final_event(server):
    payload = body("count", {"n": 3, "delay_ms": 200}, mode="stream")
    async with server.client.stream("POST", "/task", json=payload, headers={"Idempotency-Key": "k-stream"}) as first:
        assert first.status_code == 200
        during = await post(server.client, payload, key="k-stream")
        assert during.status_code == 409 and during.json()["error_code"] == "IDEMPOTENCY_KEY_IN_FLIGHT"
        text = (await first.aread()).decode()
    assert text.count("data: ") == 4 and "event: end" in text
    after = await post(server.client, payload, key="k-stream")
    assert after.status_code == 200 and after.headers["Idempotent-Replayed"] == "true"
    assert after.text.startswith("event: end\n") and after.headers["X-Task-Id"] == first.headers["X-Task-Id"]


@on_both_stores
async def test_webhook_duplicates_share_one_task(server_factory, nursery):
    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True})
    payload = body("hello", {"name": "once"}, mode="webhook", webhook={"url": receiver.url + "/hook"})
    answers = []

    async def send():
        answers.append(await post(srv.client, payload, key="k-webhook"))

    async with trio.open_nursery() as inner:
        for _ in range(5):
            inner.start_soon(send)
    assert {r.status_code for r in answers} == {202}
    [task_id] = {r.json()["id"] for r in answers}
    await wait_until(lambda: receiver.delivered(task_id))
    assert [c.body["id"] for c in receiver.calls] == [task_id]
    rows = await srv.runtime.store.execute("SELECT count(*) FROM webhook_tasks WHERE idempotency_key = 'k-webhook'")
    assert rows == [(1,)]
    await srv.client.aclose()


async def test_sync_and_stream_tasks_stay_off_the_store(server):
    await post(server.client, body("echo", {"x": 1}))
    await post(server.client, body("echo", {"x": 2}), key="k-sync-store")
    async with server.client.stream("POST", "/task", json=body("count", {"n": 2}, mode="stream")) as r:
        await r.aread()
    assert await server.runtime.store.execute("SELECT count(*) FROM webhook_tasks") == [(0,)]


def test_parse_key_accepts_bare_and_structured_strings():
    assert parse_key(None) is None
    assert parse_key("abc-123") == "abc-123"
    assert parse_key('"8e03978e-40d5-43e8"') == "8e03978e-40d5-43e8"
    assert parse_key('"a\\"b"') == 'a"b'
    with pytest.raises(Rejected):
        parse_key("\x7f")


async def test_table_expires_settled_keys_but_never_pending_ones(autojump_clock):
    table = IdempotencyTable(keep_s=1.0, max_entries=10)
    settled, owner = table.claim("a", "f", "sync")
    assert owner
    pending, _ = table.claim("b", "f", "sync")
    table.settle(settled, None)
    await trio.sleep(1.1)  # the autojump clock: the table's keep_s passes without waiting
    assert table.claim("a", "f2", "sync")[1]  # expired: a new owner, no 422
    assert not table.claim("b", "f", "sync")[1]  # still being admitted


async def test_openapi_documents_the_key(server):
    paths = (await server.client.get("/openapi")).json()["paths"]
    for method, required in (("post", False), ("delete", True)):
        [param] = [p for p in paths["/task"][method]["parameters"] if p["in"] == "header"]
        assert param["name"] == "Idempotency-Key" and param["required"] is required
    assert "422" in paths["/task"]["post"]["responses"]


async def test_a_sync_client_that_went_away_leaves_the_key_free(server):
    tag = "idem-gone"
    payload = body("test_gate", {"gate": tag, "tag": tag})
    with pytest.raises(httpx.ReadTimeout):
        await server.client.post("/task", json=payload, headers={"Idempotency-Key": "k-gone"}, timeout=0.5)
    await wait_until(lambda: len(server.runtime.services.tasks.idempotency) == 0)
    fns.gate(tag).set()
    again = await post(server.client, payload, key="k-gone")
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert fns.STARTED.count(tag) == 2  # the abandoned run was cancelled; the retry ran it
