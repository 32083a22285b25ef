"""`amp_runtime.client` against a real server on a socket: every method, trio and asyncio, the
blocking client from threads, retries that never run a task twice, a stream left early."""

from __future__ import annotations

import asyncio
import threading

import httpx
import msgspec
import pytest
import trio

from amp_runtime.client import AsyncClient, Client, Rejected, TaskFailed, TaskTimedOut, Unavailable
from amp_runtime.durable.templates import template_id_for

from ..helpers import run_cli, wait_until
from ..tasks import fns
from ..tasks import raising_fns  # noqa: F401  (registers echo_later, raise_*)

COUNTER = template_id_for("counter")


class Size(msgspec.Struct):
    width: int
    height: int


class Area(msgspec.Struct):
    area: int
    typed: bool


async def test_calls_streams_and_errors_under_trio(server):
    async with AsyncClient(server.url) as client:
        assert await client.call("hello", {"name": "Andera"}) == "Hello, Andera!"
        assert await client.call("test_resize", Size(3, 4), result_type=Area) == Area(12, True)
        with pytest.raises(TaskFailed) as failed:
            await client.call("fail", {"message": "nope"})
        assert (failed.value.type, failed.value.message) == ("RuntimeError", "nope") and failed.value.task_id
        with pytest.raises(TaskFailed) as halted:
            await client.call("raise_async", {"raise": "SystemExit", "message": "argparse"})
        assert (halted.value.type, halted.value.message) == ("SystemExit", "argparse")
        with pytest.raises(TaskTimedOut):
            await client.call("test_slow", {})
        with pytest.raises(Rejected) as unknown:
            await client.call("no_such_function", {})
        assert unknown.value.status == 404
        with pytest.raises(Rejected) as bad:
            await client.call("test_resize", {"width": 0, "height": "x"})
        assert bad.value.status == 400 and bad.value.problems

        assert [item async for item in client.stream("count", {"n": 3})] == [{"i": 0}, {"i": 1}, {"i": 2}]
        items = []
        with pytest.raises(TaskFailed) as streamed:
            async for item in client.stream("raise_stream", {"raise": "KeyboardInterrupt"}):
                items.append(item)
        assert items == [{"before": True}] and streamed.value.type == "KeyboardInterrupt"


async def test_a_stream_left_early_frees_its_slot(server):
    async with AsyncClient(server.url) as client:
        seen = []
        async for item in client.stream("test_endless", {}):
            seen.append(item)
            if len(seen) == 3:
                break
        assert seen == [{"i": 0}, {"i": 1}, {"i": 2}]

        async def slots_free() -> bool:
            return (await server.client.get("/health")).json()["slots"]["busy"] == 0

        await wait_until(slots_free, timeout=10)


async def test_map_yields_every_input_as_it_finishes(server):
    async with AsyncClient(server.url) as client:
        inputs = [{"n": n} for n in range(-3, 300)]
        items = [item async for item in client.map("test_no_await", inputs, batch=100)]
        assert sorted(item.index for item in items) == list(range(len(inputs)))
        for item in items:
            n = inputs[item.index]["n"]
            if n < 0:
                assert isinstance(item.error, TaskFailed) and item.error.type == "ValueError" and not item.ok
            else:
                assert item.result == {"n": n, "twice": 2 * n} and item.id


async def test_submit_get_cancel(server_factory):
    srv = await server_factory(webhook={"allow_private": True})
    async with AsyncClient(srv.url) as client:
        task_id = await client.submit("test_gate", {"gate": "client-cancel"}, webhook="http://127.0.0.1:9/hook")
        await wait_until(lambda: _status(client, task_id, "running"), timeout=10)
        state = await client.cancel(task_id)
        assert state["id"] == task_id
        await wait_until(lambda: _status(client, task_id, "cancelled"), timeout=10)
        with pytest.raises(Rejected) as gone:
            await client.get("0" * 32)
        assert gone.value.status == 404


async def _status(client: AsyncClient, task_id: str, status: str) -> bool:
    return (await client.get(task_id))["status"] == status


class Recording(httpx.AsyncHTTPTransport):
    """Notes (idempotency key, status) of every answer."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str | None, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.answers.append((request.headers.get("idempotency-key"), response.status_code))
        return response


async def test_a_full_queue_is_retried_after_retry_after_and_runs_once(server_factory):
    """429 QUEUE_FULL: the call waits Retry-After and sends again with the same idempotency key."""
    srv = await server_factory(workers=[{"id": "w1", "slots": 1, "max_queue": 0}])
    fns.STARTED.clear()
    recording = Recording()
    async with AsyncClient(srv.url, retries=20, transport=recording) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.call, "test_gate", {"gate": "client-retry", "tag": "holder"})
        await wait_until(lambda: fns.STARTED == ["holder"], timeout=10)
        result = []

        async def waiting_call() -> None:
            result.append(await client.call("test_gate", {"gate": "client-retry", "tag": "second"}))

        nursery.start_soon(waiting_call)
        await wait_until(lambda: any(status == 429 for _, status in recording.answers), timeout=10)
        fns.gate("client-retry").set()
    assert result == ["second"] and fns.STARTED.count("second") == 1
    refused_key = next(key for key, status in recording.answers if status == 429)
    assert (refused_key, 200) in recording.answers  # the retry that ran it carried the same key
    async with AsyncClient("http://127.0.0.1:9", retries=1) as gone:
        with pytest.raises(Unavailable) as unreachable:
            await gone.call("hello", {})
        assert unreachable.value.status is None


async def test_the_async_client_runs_under_asyncio(server):
    async def under_asyncio() -> list:
        async with AsyncClient(server.url) as client:
            call = await client.call("hello", {"name": "asyncio"})
            items = [item async for item in client.stream("count", {"n": 2})]
            mapped = sorted([item.result async for item in client.map("echo", [1, 2, 3])])
            return [call, items, mapped]

    answer = await trio.to_thread.run_sync(lambda: asyncio.run(under_asyncio()))
    assert answer == ["Hello, asyncio!", [{"i": 0}, {"i": 1}], [1, 2, 3]]


async def test_the_blocking_client_from_many_threads(server):
    def work() -> list:
        with Client(server.url) as client:
            results: list = []
            lock = threading.Lock()

            def caller(n: int) -> None:
                value = client.call("echo", {"n": n})
                with lock:
                    results.append(value["n"])

            threads = [threading.Thread(target=caller, args=(n,)) for n in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            streamed = list(client.stream("count", {"n": 3}))
            first = next(iter(client.stream("test_endless", {})))  # left at once: the task is cancelled
            mapped = sorted(item.result for item in client.map("echo", list(range(10))))
            try:
                client.call("fail", {"message": "blocking"})
            except TaskFailed as exc:
                failure = exc.message
            return [sorted(results), streamed, first, mapped, failure]

    results, streamed, first, mapped, failure = await trio.to_thread.run_sync(work)
    assert results == list(range(20)) and streamed == [{"i": 0}, {"i": 1}, {"i": 2}] and first == {"i": 0}
    assert mapped == list(range(10)) and failure == "blocking"


async def test_jobs_durable_workers_and_the_registry(server):
    async with AsyncClient(server.url) as client:
        job = await client.create_job("example/blocks@1.0.0", 0, 299)
        updates = [update async for update in client.watch_job(job["id"], interval=0.05)]
        assert updates[-1][0]["status"] == "Completed" and "tables" in updates[-1][1]
        await client.create_worker(COUNTER, "c1")
        assert await client.invoke(COUNTER, "c1", "add", [2]) == 2
        key = await client.invocation_key(COUNTER, "c1")
        assert await client.invoke(COUNTER, "c1", "add", [3], key=key) == 5
        assert await client.invoke(COUNTER, "c1", "add", [3], key=key) == 5  # recorded, not run again
        assert await client.invoke(COUNTER, "c1", "add", [0]) == 5
        assert any(worker["node_id"] == "worker-01" for worker in await client.workers())
        assert (await client.worker("worker-01"))["node_id"] == "worker-01"


async def test_the_call_and_jobs_watch_commands(server):
    code, out = await run_cli("call", "hello", '{"name": "shell"}', "--url", server.url)
    assert (code, out.strip()) == (0, '"Hello, shell!"')
    code, out = await run_cli("call", "count", '{"n": 2}', "--stream", "--url", server.url)
    assert (code, out.splitlines()) == (0, ['{"i": 0}', '{"i": 1}'])
    code, out = await run_cli("call", "fail", '{"message": "from the shell"}', "--url", server.url)
    assert (code, out.strip()) == (1, "RuntimeError: from the shell")
    code, out = await run_cli("call", "no_such_function", "--url", server.url)
    assert code == 2 and "404" in out and "Traceback" not in out
    code, out = await run_cli("call", "hello", "{not json", "--url", server.url)
    assert code == 2 and "not JSON" in out
    job = (await server.client.post("/jobs", json={"dataset": "example/blocks@1.0.0", "start_block": 0,
                                                   "end_block": 1999})).json()
    code, out = await run_cli("jobs", "watch", str(job["id"]), "--interval", "0.05", "--url", server.url)
    lines = out.splitlines()
    assert code == 0 and lines[-1] == f"job {job['id']}: Completed", out
    assert any(line.startswith(f"job {job['id']} ") and "/1999" in line for line in lines[:-1])
