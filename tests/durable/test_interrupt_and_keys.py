"""Issue 13, item 5: an interrupt answers its waiting callers at once; an invocation key stands
for one call (another call under it is 409, also after kill -9)."""

from __future__ import annotations

import signal

import httpx
import trio

from ..helpers import spawn_server, wait_until
from .util import APPROVAL, COUNTER, KV, call, create, new_key, promise_ids, status, worker_path


async def test_interrupt_answers_the_waiting_caller_at_once_and_the_call_resumes_on_next_use(server_factory):
    srv = await server_factory(durable={"invoke_timeout_s": 120.0})
    c = srv.client
    await create(c, APPROVAL, "a")
    key = await new_key(c, APPROVAL, "a")
    answers: list[httpx.Response] = []
    async with trio.open_nursery() as nursery:
        async def waiting_caller():
            answers.append(await call(c, APPROVAL, "a", "request", ["ship?"], key=key))

        nursery.start_soon(waiting_caller)

        async def suspended():
            return await status(c, APPROVAL, "a") == "Suspended"

        await wait_until(suspended)
        assert (await c.post(worker_path(APPROVAL, "a") + "/interrupt")).json() is True
        with trio.fail_after(10):  # not the 120 s invoke timeout
            await wait_until(lambda: bool(answers), timeout=10)
    (answer,) = answers
    assert answer.status_code == 409, answer.text
    assert "interrupted" in answer.json()["error"] and "same invocation key" in answer.json()["error"]
    assert await status(c, APPROVAL, "a") == "Interrupted"

    # A retry with the same key is a use: the interrupted invocation resumes and finds its promise.
    (promise,) = await promise_ids(c, APPROVAL, "a")
    async with trio.open_nursery() as nursery:
        async def retry():
            answers.append(await call(c, APPROVAL, "a", "request", ["ship?"], key=key))

        nursery.start_soon(retry)
        await wait_until(suspended)
        assert await promise_ids(c, APPROVAL, "a") == [promise]
        done = await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": promise, "data": [7]})
        assert done.json() is True
    assert answers[-1].json() == {"result": [[7]]}


async def test_openapi_documents_the_409_of_invoke_and_await(server):
    spec = (await server.client.get("/openapi")).json()
    path = "/v1/templates/{template_id}/workers/{worker_name}/invoke-and-await"
    responses = spec["paths"][path]["post"]["responses"]
    assert "409" in responses and "504" in responses


async def test_a_key_reused_for_another_call_is_409_and_the_same_call_keeps_its_result(server):
    c = server.client
    await create(c, COUNTER, "c")
    key = await new_key(c, COUNTER, "c")
    assert (await call(c, COUNTER, "c", "add", [5], key=key)).json() == {"result": [5]}
    other_function = await call(c, COUNTER, "c", "get", [], key=key)
    assert other_function.status_code == 409 and "'add', not 'get'" in other_function.json()["error"]
    other_params = await call(c, COUNTER, "c", "add", [7], key=key)
    assert other_params.status_code == 409 and "other parameters" in other_params.json()["error"]
    other_convention = await call(c, COUNTER, "c", "add", ["[5]"], key=key, **{"calling-convention": "stdio"})
    assert other_convention.status_code == 409, other_convention.text
    assert (await call(c, COUNTER, "c", "add", [5], key=key)).json() == {"result": [5]}
    assert (await call(c, COUNTER, "c", "get")).json() == {"result": [5]}  # add ran once


async def test_a_key_reused_while_its_call_is_pending_is_409(server):
    c = server.client
    await create(c, APPROVAL, "p")
    key = await new_key(c, APPROVAL, "p")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, c, APPROVAL, "p", "request", ["one"], key)

        async def suspended():
            return await status(c, APPROVAL, "p") == "Suspended"

        await wait_until(suspended)
        r = await call(c, APPROVAL, "p", "request", ["two"], key=key)
        assert r.status_code == 409, r.text
        (promise,) = await promise_ids(c, APPROVAL, "p")
        await c.post(worker_path(APPROVAL, "p") + "/complete", json={"oplogIdx": promise, "data": [1]})


async def test_a_keys_recorded_call_survives_kill9(nursery, tmp_path):
    data = tmp_path / "d"
    first = await spawn_server(nursery, data)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as c:
        await create(c, COUNTER, "c")
        key = await new_key(c, COUNTER, "c")
        assert (await call(c, COUNTER, "c", "add", [2], key=key)).json() == {"result": [2]}
        kv_key = await new_key(c, COUNTER, "c")
        assert (await call(c, COUNTER, "c", "add", [3], key=kv_key)).json() == {"result": [5]}
    first.kill9()
    await first.wait()
    second = await spawn_server(nursery, data)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as c:
        r = await call(c, COUNTER, "c", "get", [], key=key)
        assert r.status_code == 409 and "'add', not 'get'" in r.json()["error"], r.text
        assert (await call(c, COUNTER, "c", "add", [4], key=kv_key)).status_code == 409
        assert (await call(c, COUNTER, "c", "add", [2], key=key)).json() == {"result": [2]}
        assert (await call(c, COUNTER, "c", "add", [3], key=kv_key)).json() == {"result": [5]}
        assert (await call(c, COUNTER, "c", "get")).json() == {"result": [5]}
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0


async def test_same_object_params_in_another_key_order_are_the_same_call(server):
    c = server.client
    await create(c, KV, "k")
    key = await new_key(c, KV, "k")
    assert (await call(c, KV, "k", "put", ["x", {"a": 1, "b": [2]}], key=key)).status_code == 200
    again = await c.post(worker_path(KV, "k") + "/invoke-and-await", params={"invocation-key": key, "function": "put"},
                         content=b'{"params": ["x", {"b": [2], "a": 1}]}')
    assert again.status_code == 200, again.text
    assert (await call(c, KV, "k", "put", ["x", {"a": 1, "b": [3]}], key=key)).status_code == 409
