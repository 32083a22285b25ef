"""The durable workers API end to end on a real socket (in-process server)."""

import trio

from ..helpers import wait_until
from .util import start_suspended_request, APPROVAL, COUNTER, KV, call, create, new_key, oplog, promise_ids, status, worker_path
from ..pg import on_both_stores


async def test_templates_are_listed_with_their_interface(server):
    r = await server.client.get("/v1/templates")
    assert r.status_code == 200
    by_name = {t["name"]: t for t in r.json()}
    counter = by_name["counter"]
    assert counter["templateId"] == COUNTER and counter["version"] >= 1
    functions = {f["name"]: f for f in counter["functions"]}
    assert functions["add"] == {"name": "add", "params": [{"name": "n", "type": "int"}], "result": "int"}
    assert functions["get"]["params"] == []
    assert {"kv", "approval"} <= set(by_name)


async def test_create_describe_and_parse_worker_id(server):
    c = server.client
    r = await create(c, COUNTER, "c1", args=["-v", "4"], env=[["MODE", "prod"], ["DEBUG", "0"]])
    assert r.status_code == 200, r.text
    assert r.json() == {"workerId": {"rawTemplateId": COUNTER, "workerName": "c1"}, "templateVersionUsed": 1}
    meta = (await c.get(worker_path(COUNTER, "c1"))).json()
    assert meta["args"] == ["-v", "4"] and meta["env"] == {"MODE": "prod", "DEBUG": "0"}
    assert meta["status"] == "Idle" and meta["retryCount"] == 0 and meta["templateVersion"] == 1
    assert meta["workerId"] == {"rawTemplateId": COUNTER, "workerName": "c1"}
    assert "accountId" in meta
    r = await c.get(f"/v1/templates/workers/{COUNTER}.c1")
    assert r.status_code == 200 and r.json()["workerId"]["workerName"] == "c1"
    r = await create(c, KV, "k1", env={"A": "1"})
    assert r.status_code == 200
    assert (await c.get(worker_path(KV, "k1"))).json()["env"] == {"A": "1"}


@on_both_stores
async def test_counter_invocations_in_order(server):
    c = server.client
    await create(c, COUNTER, "c")
    for n in (1, 2, 3):
        r = await call(c, COUNTER, "c", "add", [n])
        assert r.status_code == 200, r.text
    assert r.json() == {"result": [6]}
    assert (await call(c, COUNTER, "c", "get")).json() == {"result": [6]}


async def test_kv_put_get(server):
    c = server.client
    await create(c, KV, "kv")
    assert (await call(c, KV, "kv", "put", ["a", {"x": [1, 2]}])).json() == {"result": []}
    assert (await call(c, KV, "kv", "get", ["a"])).json() == {"result": [{"x": [1, 2]}]}
    assert (await call(c, KV, "kv", "get", ["missing"])).json() == {"result": [None]}


@on_both_stores
async def test_same_key_sequentially_runs_once(server):
    c = server.client
    await create(c, COUNTER, "c")
    key = await new_key(c, COUNTER, "c")
    first = await call(c, COUNTER, "c", "add", [5], key=key)
    second = await call(c, COUNTER, "c", "add", [5], key=key)
    assert first.json() == second.json() == {"result": [5]}
    assert (await call(c, COUNTER, "c", "get")).json() == {"result": [5]}


@on_both_stores
async def test_same_key_concurrently_runs_once(server):
    c = server.client
    await create(c, APPROVAL, "a")
    key = await new_key(c, APPROVAL, "a")
    results = []

    async def caller():
        results.append(await call(c, APPROVAL, "a", "request", ["ok?"], key=key))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        nursery.start_soon(caller)

        async def suspended():
            return await status(c, APPROVAL, "a") == "Suspended"

        await wait_until(suspended)
        (promise,) = await promise_ids(c, APPROVAL, "a")
        r = await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": promise, "data": [1, 2]})
        assert r.json() is True
    assert [r.json() for r in results] == [{"result": [[1, 2]]}] * 2
    kinds = [e["kind"] for e in await oplog(c, APPROVAL, "a")]
    assert kinds.count("invoke") == 1 and kinds.count("promise") == 1


async def test_invoke_enqueues_and_runs_in_order(server):
    c = server.client
    await create(c, COUNTER, "c")
    for n in (1, 10, 100):
        r = await c.post(worker_path(COUNTER, "c") + "/invoke", params={"function": "add"}, json={"params": [n]})
        assert r.status_code == 200 and r.content == b""
    assert (await call(c, COUNTER, "c", "get")).json() == {"result": [111]}


@on_both_stores
async def test_approval_complete_resumes_the_awaiting_caller(server):
    c = server.client
    await create(c, APPROVAL, "a")
    got = []

    async def caller():
        got.append(await call(c, APPROVAL, "a", "request", ["deploy?"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)

        async def suspended():
            return await status(c, APPROVAL, "a") == "Suspended"

        await wait_until(suspended)
        (promise,) = await promise_ids(c, APPROVAL, "a")
        path = worker_path(APPROVAL, "a") + "/complete"
        assert (await c.post(path, json={"oplogIdx": promise, "data": [7, 0, 255]})).json() is True
    assert got[0].json() == {"result": [[7, 0, 255]]}
    assert (await c.post(path, json={"oplogIdx": promise, "data": [1]})).json() is False
    r = await c.post(path, json={"oplogIdx": 9999, "data": [1]})
    assert r.status_code == 404 and "error" in r.json()
    r = await c.post(path, json={"oplogIdx": promise, "data": [256, -1]})
    assert r.status_code == 400 and r.json()["errors"]
    assert await status(c, APPROVAL, "a") == "Idle"


async def test_interrupt_then_invoke_resumes_the_interrupted_call_first(server):
    c = server.client
    await create(c, APPROVAL, "a")
    first = []

    async with trio.open_nursery() as nursery:
        key = await new_key(c, APPROVAL, "a")

        async def caller():
            first.append(await call(c, APPROVAL, "a", "request", ["one"], key=key))

        nursery.start_soon(caller)

        async def suspended():
            return await status(c, APPROVAL, "a") == "Suspended"

        await wait_until(suspended)
        r = await c.post(worker_path(APPROVAL, "a") + "/interrupt")
        assert r.status_code == 200 and r.json() is True
        assert await status(c, APPROVAL, "a") == "Interrupted"
        await wait_until(lambda: bool(first))  # the waiting caller is answered at once
        assert first[0].status_code == 409 and "interrupted" in first[0].json()["error"]
        first.clear()
        (promise,) = await promise_ids(c, APPROVAL, "a")
        # Completing is not a use: the worker stays Interrupted until the next invocation.
        path = worker_path(APPROVAL, "a") + "/complete"
        assert (await c.post(path, json={"oplogIdx": promise, "data": [1]})).json() is True
        assert await status(c, APPROVAL, "a") == "Interrupted"
        second_key = await new_key(c, APPROVAL, "a")
        second = []

        async def second_caller():
            second.append(await call(c, APPROVAL, "a", "request", ["two"], key=second_key))

        nursery.start_soon(second_caller)
        await wait_until(suspended)  # the interrupted call ran first, then the second one
        assert (await call(c, APPROVAL, "a", "request", ["one"], key=key)).json() == {"result": [[1]]}
        await wait_until(suspended)
        promises = await promise_ids(c, APPROVAL, "a")
        assert len(promises) == 2
        assert (await c.post(path, json={"oplogIdx": promises[1], "data": [2]})).json() is True
    assert second[0].json() == {"result": [[2]]}
    done = [e["detail"]["invocation"] for e in await oplog(c, APPROVAL, "a") if e["kind"] == "done"]
    invokes = [e["oplogIdx"] for e in await oplog(c, APPROVAL, "a") if e["kind"] == "invoke"]
    assert done == invokes


async def test_recover_immediately_keeps_status_and_reruns(server):
    c = server.client
    await create(c, APPROVAL, "a")
    got = []
    async with trio.open_nursery() as nursery:
        await start_suspended_request(nursery, c, "a", got)

        async def suspended():
            return await status(c, APPROVAL, "a") == "Suspended"

        for spelling in ("recover-immediately", "recovery-immediately"):
            r = await c.post(worker_path(APPROVAL, "a") + "/interrupt", params={spelling: "true"})
            assert r.status_code == 200
            await wait_until(suspended)
        # The re-run found the same promise rather than making a new one.
        (promise,) = await promise_ids(c, APPROVAL, "a")
        await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": promise, "data": [3]})
    assert got[0].json() == {"result": [[3]]}


async def test_interrupting_an_idle_worker_is_not_an_error(server):
    c = server.client
    await create(c, COUNTER, "c")
    assert (await c.post(worker_path(COUNTER, "c") + "/interrupt")).status_code == 200
    assert (await c.post(worker_path(COUNTER, "c") + "/interrupt")).status_code == 200
    assert (await call(c, COUNTER, "c", "add", [2])).json() == {"result": [2]}
    assert await status(c, COUNTER, "c") == "Idle"


@on_both_stores
async def test_delete_removes_the_worker(server):
    c = server.client
    await create(c, COUNTER, "c")
    await call(c, COUNTER, "c", "add", [2])
    r = await c.delete(worker_path(COUNTER, "c"))
    assert r.status_code == 200
    assert (await c.get(worker_path(COUNTER, "c"))).status_code == 404
    assert (await create(c, COUNTER, "c")).status_code == 200
    assert (await call(c, COUNTER, "c", "get")).json() == {"result": [0]}


async def test_openapi_lists_the_durable_routes(server):
    paths = (await server.client.get("/openapi")).json()["paths"]
    worker = "/v1/templates/{template_id}/workers/{worker_name}"
    for path in ("/v1/templates", "/v1/templates/{template_id}/workers", "/v1/templates/workers/{worker_id}",
                 worker, f"{worker}/key", f"{worker}/invoke-and-await", f"{worker}/invoke",
                 f"{worker}/complete", f"{worker}/interrupt"):
        assert path in paths, path
    params = [p["name"] for p in paths[f"{worker}/invoke-and-await"]["post"]["parameters"]]
    assert {"invocation-key", "function", "calling-convention"} <= set(params)


async def test_shutdown_answers_a_suspended_caller_at_once(server):
    c = server.client
    await create(c, APPROVAL, "a")
    got = []
    async with trio.open_nursery() as nursery:
        await start_suspended_request(nursery, c, "a", got)
        with trio.fail_after(2):  # well inside the 5 s grace period
            server.runtime.request_stop()
            await wait_until(lambda: bool(got))
    assert got[0].status_code == 500 and "shutting down" in got[0].json()["error"]
