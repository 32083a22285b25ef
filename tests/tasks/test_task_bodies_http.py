"""What task bodies say, on a real socket, through the hot path and the Quart routes: a None
result is `"result": null`, and a webhook task's record names its worker and start."""

import json

import pytest

from ..helpers import wait_until
from . import fns  # noqa: F401  (registers test_none)
from ..pg import on_both_stores
from .receiver import start_receiver

CALL = {"contract": 1}


@pytest.fixture(params=[True, False], ids=["hot_path", "quart"])
async def srv(request, server_factory):
    server = await server_factory(http={"hot_path": request.param}, webhook={"allow_private": True},
                                  tasks={"keep_results": 1})
    yield server
    await server.client.aclose()


@pytest.mark.parametrize("function, input", [("echo", None), ("test_none", {})])
async def test_a_none_result_is_null_in_every_body(srv, function, input):
    r = await srv.client.post("/task", json={"function": function, "input": input, **CALL})
    assert r.status_code == 200 and r.json()["result"] is None and "result" in r.json(), r.text
    view = (await srv.client.get(f"/tasks/{r.json()['id']}")).json()
    assert view["status"] == "completed" and "result" in view and view["result"] is None, view

    r = await srv.client.post("/tasks", json=[{"function": function, "input": input, **CALL}])
    [line] = map(json.loads, r.text.splitlines())
    assert "result" in line and line["result"] is None and line["status"] == "completed", line

    failed = await srv.client.post("/task", json={"function": "fail", "input": {"message": "x"}, **CALL})
    assert failed.status_code == 500 and "result" not in failed.json()  # "result" | "error"


async def test_a_none_result_is_null_in_the_webhook_and_the_journal(srv, nursery):
    receiver = await start_receiver(nursery)
    r = await srv.client.post("/task", json={"function": "test_none", "input": {}, "mode": "webhook",
                                             "webhook": {"url": receiver.url}, **CALL})
    task_id = r.json()["id"]
    await receiver.wait_for(1)
    assert "result" in receiver.by_task()[task_id] and receiver.by_task()[task_id]["result"] is None
    await wait_until(lambda: _delivered(srv, task_id))
    # A later task pushes it out of the worker's history (keep_results 1): the journal answers.
    assert (await srv.client.post("/task", json={"function": "echo", "input": 1, **CALL})).status_code == 200
    view = (await srv.client.get(f"/tasks/{task_id}")).json()
    assert view["status"] == "completed" and "result" in view and view["result"] is None, view


@on_both_stores
async def test_the_journal_names_a_webhook_task_s_worker_and_start(srv, nursery):
    receiver = await start_receiver(nursery)
    r = await srv.client.post("/task", json={"function": "sleep", "input": {"ms": 1}, "mode": "webhook",
                                             "webhook": {"url": receiver.url}, **CALL})
    task_id = r.json()["id"]
    at_once = (await srv.client.get(f"/tasks/{task_id}")).json()
    assert at_once["worker"] == "worker-01", at_once
    await wait_until(lambda: _delivered(srv, task_id))
    remembered = (await srv.client.get(f"/tasks/{task_id}")).json()
    assert (await srv.client.post("/task", json={"function": "echo", "input": 1, **CALL})).status_code == 200
    journaled = (await srv.client.get(f"/tasks/{task_id}")).json()  # out of the history: the journal's view
    assert journaled["worker"] == remembered["worker"] == "worker-01", journaled
    assert journaled["started_at"] == remembered["started_at"], (journaled, remembered)
    assert journaled["created_at"] <= journaled["started_at"] <= journaled["finished_at"]


async def _delivered(srv, task_id):
    return (await srv.client.get(f"/tasks/{task_id}")).json().get("webhook_status") == "delivered"
