"""Durability across kill -9: a real server process restarted on the same data dir."""

import signal

import httpx
import pytest
import trio

from ..helpers import spawn_server, wait_until
from ..pg import store_env
from .util import APPROVAL, COUNTER, call, create, new_key, oplog, promise_ids, status, worker_path


async def restarted(nursery, data_dir, first, env=None):
    first.kill9()
    await first.wait()
    return await spawn_server(nursery, data_dir, env=env)


async def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_counter_and_invocation_keys_survive_kill9(nursery, tmp_path, store_url):
    data = tmp_path / "d"
    first = await spawn_server(nursery, data, env=store_env(store_url))
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as c:
        assert (await create(c, COUNTER, "c", args=["x"])).status_code == 200
        for n in (1, 2, 3):
            assert (await call(c, COUNTER, "c", "add", [n])).status_code == 200
        key = await new_key(c, COUNTER, "c")
        assert (await call(c, COUNTER, "c", "add", [10], key=key)).json() == {"result": [16]}
        unused = await new_key(c, COUNTER, "c")
    second = await restarted(nursery, data, first, env=store_env(store_url))
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as c:
        meta = (await c.get(worker_path(COUNTER, "c"))).json()
        assert meta["status"] == "Idle" and meta["args"] == ["x"]
        assert (await call(c, COUNTER, "c", "get")).json() == {"result": [16]}
        # The retry after the restart answers from the record: add ran once.
        assert (await call(c, COUNTER, "c", "add", [10], key=key)).json() == {"result": [16]}
        assert (await call(c, COUNTER, "c", "get")).json() == {"result": [16]}
        # A key issued before the restart is still known.
        assert (await call(c, COUNTER, "c", "add", [1], key=unused)).json() == {"result": [17]}
    await stop(second)


async def test_suspended_approval_resumes_after_kill9(nursery, tmp_path):
    data = tmp_path / "d"
    first = await spawn_server(nursery, data)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as c:
        await create(c, APPROVAL, "a")
        key = await new_key(c, APPROVAL, "a")

        async def doomed_caller():
            with pytest.raises(httpx.TransportError):
                await call(c, APPROVAL, "a", "request", ["ship?"], key=key)

        async with trio.open_nursery() as callers:
            callers.start_soon(doomed_caller)

            async def suspended():
                return await status(c, APPROVAL, "a") == "Suspended"

            await wait_until(suspended)
            (promise,) = await promise_ids(c, APPROVAL, "a")
            first.kill9()
            await first.wait()

    second = await spawn_server(nursery, data)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as c:
        async def suspended_again():
            return await status(c, APPROVAL, "a") == "Suspended"

        await wait_until(suspended_again)  # the unfinished invocation ran again by itself
        assert await promise_ids(c, APPROVAL, "a") == [promise]  # and found its promise
        got = []
        async with trio.open_nursery() as callers:
            async def retrying_caller():
                got.append(await call(c, APPROVAL, "a", "request", ["ship?"], key=key))

            callers.start_soon(retrying_caller)
            r = await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": promise, "data": [4, 2]})
            assert r.json() is True
        assert got[0].json() == {"result": [[4, 2]]}
        kinds = [e["kind"] for e in await oplog(c, APPROVAL, "a")]
        assert kinds.count("invoke") == 1 and kinds.count("done") == 1
    await stop(second)


async def test_completion_of_an_interrupted_worker_survives_kill9(nursery, tmp_path):
    data = tmp_path / "d"
    first = await spawn_server(nursery, data)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as c:
        await create(c, APPROVAL, "a")
        key = await new_key(c, APPROVAL, "a")
        r = await c.post(worker_path(APPROVAL, "a") + "/invoke", params={"function": "request"}, json={"params": ["m"]})
        assert r.status_code == 200

        async def suspended():
            return await status(c, APPROVAL, "a") == "Suspended"

        await wait_until(suspended)
        assert (await c.post(worker_path(APPROVAL, "a") + "/interrupt")).json() is True
        (promise,) = await promise_ids(c, APPROVAL, "a")
        r = await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": promise, "data": [8]})
        assert r.json() is True
    second = await restarted(nursery, data, first)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as c:
        assert await status(c, APPROVAL, "a") == "Interrupted"
        r = await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": promise, "data": [9]})
        assert r.json() is False  # the completion was persisted
        # The next use resumes the interrupted invocation (it finds its data), then runs the new one.
        got = []
        async with trio.open_nursery() as callers:
            async def caller():
                got.append(await call(c, APPROVAL, "a", "request", ["next"], key=key))

            callers.start_soon(caller)

            async def two_promises():
                return len(await promise_ids(c, APPROVAL, "a")) == 2

            await wait_until(two_promises)
            entries = await oplog(c, APPROVAL, "a")
            assert [e["kind"] for e in entries].count("done") == 1
            second_promise = (await promise_ids(c, APPROVAL, "a"))[1]
            await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": second_promise, "data": [1]})
        assert got[0].json() == {"result": [[1]]}
    await stop(second)
