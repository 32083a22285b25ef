"""A `POST /tasks` item's `idempotency_key` is `POST /task`'s `Idempotency-Key`: one table of keys,
the same key + the same request = the same task, never a second run. On a real socket, through
the hot path and through the Quart route."""

import json

import httpx
import pytest

from ..helpers import spawn_server, wait_until
from . import fns
from .test_durability import CONFIG, start_receiver

CALL = {"contract": 1}


@pytest.fixture(params=[True, False], ids=["hot_path", "quart"])
async def srv(request, server_factory):
    server = await server_factory(http={"hot_path": request.param})
    yield server
    await server.client.aclose()


def counted(tag, **extra):
    """A task whose runs are counted in `fns.STARTED` (its gate is open: it returns at once)."""
    fns.gate(tag).set()
    return {"function": "test_gate", "input": {"gate": tag, "tag": tag}, **CALL, **extra}


async def post_batch(client, items):
    r = await client.post("/tasks", json=items)
    assert r.status_code == 200, r.text
    return {line["index"]: line for line in map(json.loads, r.text.splitlines())}


async def test_the_same_batch_twice_runs_once(srv):
    tag = f"bk-twice-{id(srv)}"
    items = [counted(tag, idempotency_key=tag), {"function": "echo", "input": 1, **CALL}]
    first = await post_batch(srv.client, items)
    again = await post_batch(srv.client, items)
    assert fns.STARTED.count(tag) == 1
    assert first[0]["status"] == again[0]["status"] == "completed" and again[0]["result"] == tag
    assert again[0]["id"] == first[0]["id"] and again[0]["replayed"] is True and "replayed" not in first[0]
    assert again[1]["id"] != first[1]["id"]  # the item without a key ran again


async def test_a_batch_key_is_a_post_task_key_and_back(srv):
    tag = f"bk-shared-{id(srv)}"
    [line] = (await post_batch(srv.client, [counted(tag, idempotency_key=f"{tag}-1")])).values()
    single = await srv.client.post("/task", json=counted(tag), headers={"Idempotency-Key": f"{tag}-1"})
    assert single.status_code == 200 and single.headers["Idempotent-Replayed"] == "true"
    assert single.json()["id"] == line["id"]

    single = await srv.client.post("/task", json=counted(tag), headers={"Idempotency-Key": f"{tag}-2"})
    [line] = (await post_batch(srv.client, [counted(tag, idempotency_key=f"{tag}-2")])).values()
    assert line["id"] == single.json()["id"] and line["replayed"] is True and line["http_status"] == 200
    assert fns.STARTED.count(tag) == 2  # one run per key


async def test_the_same_key_with_another_request_is_rejected(srv):
    tag = f"bk-other-{id(srv)}"
    assert (await srv.client.post("/task", json=counted(tag), headers={"Idempotency-Key": tag})).status_code == 200
    lines = await post_batch(srv.client, [counted(tag, idempotency_key=tag, priority=3),
                                          counted(tag, idempotency_key=tag), {"function": "echo", **CALL}])
    assert lines[0]["status"] == "rejected" and lines[0]["http_status"] == 422
    assert lines[0]["error"]["type"] == "IDEMPOTENCY_KEY_REUSED" and "id" not in lines[0]
    assert lines[1]["replayed"] is True and lines[2]["status"] == "completed"
    assert fns.STARTED.count(tag) == 1


async def test_two_items_with_one_key_in_one_batch_run_once(srv):
    tag = f"bk-pair-{id(srv)}"
    lines = await post_batch(srv.client, [counted(tag, idempotency_key=tag), counted(tag, idempotency_key=tag)])
    assert fns.STARTED.count(tag) == 1
    assert lines[0]["id"] == lines[1]["id"] and lines[0]["result"] == lines[1]["result"] == tag
    assert sorted(line.get("replayed", False) for line in lines.values()) == [False, True]


@pytest.mark.parametrize("key, code", [("", "INVALID_IDEMPOTENCY_KEY"), ("x" * 256, "INVALID_IDEMPOTENCY_KEY"),
                                       ("caf\u00e9", "INVALID_IDEMPOTENCY_KEY"), (7, "INVALID_REQUEST")])
async def test_a_malformed_key_rejects_its_item_only(srv, key, code):
    lines = await post_batch(srv.client, [{"function": "echo", "idempotency_key": key, **CALL},
                                          {"function": "echo", "input": 2, **CALL}])
    assert lines[0]["status"] == "rejected" and lines[0]["http_status"] == 400, lines[0]
    assert lines[0]["error"]["type"] == code, lines[0]
    assert lines[1]["result"] == 2
    assert len(srv.runtime.services.tasks.idempotency) == 0


async def test_openapi_documents_the_item_key(srv):
    spec = (await srv.client.get("/openapi")).json()
    assert "idempotency_key" in spec["components"]["schemas"]["BatchTaskRequest"]["properties"]
    assert "replayed" in spec["components"]["schemas"]["BatchLine"]["properties"]


async def test_webhook_item_keys_hold_across_a_restart(nursery, tmp_path):
    receiver = await start_receiver(nursery)
    config, data = tmp_path / "config.toml", tmp_path / "data"
    config.write_text(CONFIG)
    hook = {"url": receiver.url + "/hook"}
    item = {"function": "hello", "input": {"name": "kept"}, "mode": "webhook", "webhook": hook, **CALL}

    first = await spawn_server(nursery, data, "--config", str(config))
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        [accepted] = (await post_batch(client, [{**item, "idempotency_key": "wk-1"}])).values()
        assert accepted["status"] == "queued" and accepted["http_status"] == 202
    first.kill9()
    await first.wait()

    second = await spawn_server(nursery, data, "--config", str(config))
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
        lines = await post_batch(client, [{**item, "idempotency_key": "wk-1"},
                                          {**item, "input": {"name": "other"}, "idempotency_key": "wk-1"}])
        assert lines[0]["id"] == accepted["id"] and lines[0]["replayed"] is True
        assert lines[0]["http_status"] == 202 and lines[0]["status"] == "queued"
        assert lines[1]["http_status"] == 422 and lines[1]["error"]["type"] == "IDEMPOTENCY_KEY_REUSED"
        single = await client.post("/task", json=item, headers={"Idempotency-Key": "wk-1"})
        assert single.status_code == 202 and single.json()["id"] == accepted["id"]
    second.kill9()


async def test_webhook_items_with_one_key_share_one_journaled_task(server_factory, nursery):
    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True})
    item = {"function": "hello", "input": {"name": "twice"}, "mode": "webhook",
            "webhook": {"url": receiver.url + "/hook"}, "idempotency_key": "wk-pair", **CALL}
    lines = await post_batch(srv.client, [item, item])
    assert {line["http_status"] for line in lines.values()} == {202}
    [task_id] = {line["id"] for line in lines.values()}
    await wait_until(lambda: receiver.delivered(task_id))
    assert [c.body["id"] for c in receiver.calls] == [task_id]
    rows = await srv.runtime.store.execute("SELECT count(*) FROM webhook_tasks WHERE idempotency_key = 'wk-pair'")
    assert rows == [(1,)]
    await srv.client.aclose()


async def test_delete_task_with_a_batch_item_s_key_cancels_it(srv, nursery):
    tag = f"bk-cancel-{id(srv)}"
    item = {"function": "test_gate", "input": {"gate": tag, "tag": tag}, "idempotency_key": tag, **CALL}
    answer = {}

    async def run():
        answer["lines"] = await post_batch(srv.client, [item])

    nursery.start_soon(run)
    await wait_until(lambda: tag in fns.STARTED)
    r = await srv.client.delete("/task", headers={"Idempotency-Key": tag})
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    await wait_until(lambda: "lines" in answer)
    assert answer["lines"][0]["status"] == "cancelled" and answer["lines"][0]["id"] == r.json()["id"]
