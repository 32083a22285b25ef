"""User code is contained: whatever a function raises fails its task only, a function that ends
its process cannot keep a data dir from serving, and slots bound the threads functions run in."""

from __future__ import annotations

import json
import signal

import httpx
import msgspec
import trio

from ..helpers import spawn_server, wait_until
from . import raising_fns
from .receiver import serve_webhooks

CALL = {"contract": 1}
RAISED = list(raising_fns.RAISES)
SYNC_KINDS = ["raise_async", "raise_now", "raise_thread", "raise_process", "raise_stream"]


async def post_task(client, function, input=None, **extra):
    return await client.post("/task", json={"function": function, "input": input or {}, **CALL, **extra})


async def read_stream(client, function, input) -> list[str]:
    lines = []
    async with client.stream("POST", "/task", json={"function": function, "input": input, "mode": "stream",
                                                     **CALL}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line:
                lines.append(line)
    return lines


async def test_every_base_exception_fails_its_task_only(server_factory):
    """SystemExit, KeyboardInterrupt, GeneratorExit and the user's own BaseException, raised by
    an async function, one without an await point, a thread and a process function, answered
    sync, streamed or in a batch: each fails its task with its own type and message."""
    srv = await server_factory(tasks={"process_pool_size": 1})
    for raised in RAISED:
        for function in SYNC_KINDS:
            r = await post_task(srv.client, function, {"raise": raised, "message": f"{function} says no"})
            assert r.status_code == 500, (function, raised, r.status_code, r.text)
            body = r.json()
            assert body["status"] == "failed", (function, raised, body)
            assert body["error"] == {"type": raised, "message": f"{function} says no"}, (function, body)
            view = (await srv.client.get(f"/tasks/{body['id']}")).json()
            assert (view["status"], view["error"]["type"]) == ("failed", raised)
        events = await read_stream(srv.client, "raise_stream", {"raise": raised})
        assert events[0] == 'data: {"before":true}' and events[1] == "event: error", events
        assert json.loads(events[2][len("data: "):])["error"]["type"] == raised
        r = await srv.client.post("/tasks", json=[{"function": f, "input": {"raise": raised}, **CALL}
                                                  for f in SYNC_KINDS])
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert sorted((line["status"], line["error"]["type"]) for line in lines) == [("failed", raised)] * 5
    health = (await srv.client.get("/health")).json()
    assert health["status"] == "ok" and health["slots"]["busy"] == 0
    assert (await post_task(srv.client, "echo_later", {"still": "here"})).json()["result"] == {"still": "here"}
    await srv.client.aclose()


async def test_hostile_exceptions_fail_their_task_only(server_factory):
    """An exception whose message raises KeyboardInterrupt, a BaseException whose str and repr
    raise, a class name of control characters, a trio.Cancelled raised by the function itself:
    each fails its task, in every kind and mode; the worker and the server go on."""
    srv = await server_factory(tasks={"process_pool_size": 1})
    kinds = ["raise_async", "raise_now", "raise_thread", "raise_stream"]
    for raised in raising_fns.HOSTILE:
        for function in kinds + (["raise_process"] if raised != "Cancelled" else []):
            r = await post_task(srv.client, function, {"raise": raised})
            assert r.status_code == 500, (function, raised, r.status_code, r.text)
            error = r.json()["error"]
            assert error["type"].isprintable() and len(error["type"]) <= 203, (function, raised)
            if raised in ("BadMessage", "BadBase"):
                assert error == {"type": raised, "message": f"<{raised}: its message could not be read>"}
        events = await read_stream(srv.client, "raise_stream", {"raise": raised})
        assert events[1] == "event: error", (raised, events)
        r = await srv.client.post("/tasks", json=[{"function": f, "input": {"raise": raised}, **CALL} for f in kinds])
        assert sorted(json.loads(line)["status"] for line in r.text.splitlines()) == ["failed"] * 4, r.text
    assert (await post_task(srv.client, "echo_later", {"still": "here"})).json()["result"] == {"still": "here"}
    health = (await srv.client.get("/health")).json()
    assert health["status"] == "ok" and health["slots"]["busy"] == 0
    await srv.client.aclose()


CONFIG = """
[[workers]]
id = "w1"
slots = 1
max_queue = 100

[webhook]
allow_private = true
base_delay_s = 0.1
max_delay_s = 0.2

[tasks]
process_pool_size = 1

[functions]
modules = ["tests.tasks.raising_fns"]
"""


class Receiver:
    def __init__(self) -> None:
        self.url = ""
        self.bodies: list[dict] = []

    def of(self, task_id: str) -> list[dict]:
        return [body for body in self.bodies if body["id"] == task_id]


async def start_receiver(nursery) -> Receiver:
    receiver = Receiver()

    def answer(scope, body: bytes) -> int:
        receiver.bodies.append(msgspec.json.decode(body))
        return 200

    receiver.url = await serve_webhooks(nursery, answer)
    return receiver


async def submit_webhook(client, receiver: Receiver, function: str, input: dict) -> str:
    r = await post_task(client, function, input, mode="webhook", webhook={"url": receiver.url + "/hook"})
    assert r.status_code == 202, r.text
    return r.json()["id"]


async def test_a_server_process_outlives_system_exit_from_every_kind_and_mode(nursery, tmp_path):
    """In a real server process: SystemExit and KeyboardInterrupt from every run kind, sync,
    streamed and as webhook tasks, fail their tasks; the server serves through three restarts
    over its data dir and drains to exit 0 each time, and no failed task runs again."""
    receiver = await start_receiver(nursery)
    config, data = tmp_path / "config.toml", tmp_path / "data"
    config.write_text(CONFIG)
    hooked: list[str] = []
    for start in range(3):
        server = await spawn_server(nursery, data, "--config", str(config))
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            if start == 0:
                for raised in ("SystemExit", "KeyboardInterrupt"):
                    for function in SYNC_KINDS:
                        r = await post_task(client, function, {"raise": raised})
                        assert (r.status_code, r.json()["error"]["type"]) == (500, raised), (function, r.text)
                        hooked.append(await submit_webhook(client, receiver, function, {"raise": raised}))
                    events = await read_stream(client, "raise_stream", {"raise": raised})
                    assert events[1] == "event: error"
                await wait_until(lambda: all(receiver.of(t) for t in hooked), timeout=30)
            assert (await client.get("/health")).json()["status"] == "ok"
            assert (await post_task(client, "echo_later", {"start": start})).json()["result"] == {"start": start}
            for task_id in hooked:
                view = (await client.get(f"/tasks/{task_id}")).json()
                assert view["status"] == "failed" and view["error"]["type"] in ("SystemExit", "KeyboardInterrupt")
        server.send_signal(signal.SIGTERM)
        assert await server.wait() == 0, server.output.decode(errors="replace")
    for task_id in hooked:  # delivered once, failed with what it raised; never run again
        assert [body["status"] for body in receiver.of(task_id)] == ["failed"], receiver.of(task_id)


async def test_a_webhook_task_that_ends_its_process_is_retried_once_then_delivered_failed(nursery, tmp_path):
    """No poison pill: a journaled task whose run ends the process runs again once
    ([tasks] crash_retries = 1), then its failure is delivered, and the tasks accepted after it
    run; the data dir serves again at every start."""
    receiver = await start_receiver(nursery)
    config, data = tmp_path / "config.toml", tmp_path / "data"
    config.write_text(CONFIG)
    first = await spawn_server(nursery, data, "--config", str(config))
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        # One slot: the gate holds it while the others are accepted behind it, in order.
        release, gate_runs = tmp_path / "release", tmp_path / "gate-runs"
        gate = await submit_webhook(client, receiver, "hold_thread",
                                    {"release": str(release), "runs": str(gate_runs)})
        poison = await submit_webhook(client, receiver, "end_process", {"code": 1})
        after = [await submit_webhook(client, receiver, "echo_later", {"n": n}) for n in range(3)]
        release.touch()
        assert await first.wait() == 1  # the poison ran: the process is gone
    # The poison runs once more, maybe before the server is ready: it ends the process again.
    second = await spawn_server(nursery, data, "--config", str(config), wait_ready=False)
    assert await second.wait() == 1, second.output.decode(errors="replace")
    assert not receiver.of(poison)
    third = await spawn_server(nursery, data, "--config", str(config))
    async with httpx.AsyncClient(base_url=third.url, timeout=30) as client:
        await wait_until(lambda: all(receiver.of(t) for t in [poison, *after]), timeout=30)
        failure = receiver.of(poison)
        assert [(body["status"], body["error"]["type"]) for body in failure] == [("failed", "ProcessEnded")]
        assert "2 times" in failure[0]["error"]["message"]
        assert [receiver.of(t)[0]["result"] for t in after] == [{"n": n} for n in range(3)]
        view = (await client.get(f"/tasks/{poison}")).json()
        assert (view["status"], view["error"]["type"], view["webhook_status"]) == ("failed", "ProcessEnded", "delivered")
    third.send_signal(signal.SIGTERM)
    assert await third.wait() == 0
    fourth = await spawn_server(nursery, data, "--config", str(config))  # nothing owed: nothing runs again
    async with httpx.AsyncClient(base_url=fourth.url, timeout=30) as client:
        assert (await client.get("/health")).json()["status"] == "ok"
    fourth.send_signal(signal.SIGTERM)
    assert await fourth.wait() == 0
    assert len(receiver.of(poison)) == 1 and all(len(receiver.of(t)) == 1 for t in after)
    # The gate's outcome was journaled before the poison's run: it never ran again. Its delivery
    # raced the poison, so it may have gone out again (at-least-once), always the same body.
    assert gate_runs.read_text() == "ran\n"
    assert {(b["status"], b["result"]) for b in receiver.of(gate)} == {("completed", "released")}


async def test_threads_are_bounded_by_slots(server_factory, tmp_path):
    """A thread task that times out, is cancelled or whose client left settles at once, but its
    thread keeps its slot busy until it returns: no more threads run than there are slots."""
    raising_fns.PEAK[0] = 0
    srv = await server_factory(workers=[{"id": "w1", "slots": 2, "max_queue": 100}])
    release = tmp_path / "release"
    hold = {"release": str(release)}
    results: list[dict] = []

    async def call() -> None:
        results.append((await post_task(srv.client, "hold_thread", hold)).json())

    async with trio.open_nursery() as callers:
        for _ in range(8):
            callers.start_soon(call)
    # Two ran and timed out; the six behind them never got a slot while those threads ran on.
    assert sorted(r["error"]["message"] for r in results) == (
        ["the function ran past its timeout"] * 2 + ["timed out waiting in the queue"] * 6), results
    health = (await srv.client.get("/health")).json()
    assert health["slots"] == {"total": 2, "busy": 2, "free": 0, "abandoned": 2}, health
    metrics = (await srv.client.get("/metrics")).text
    assert 'amp_worker_slots_abandoned{worker="w1"} 2.0' in metrics
    assert raising_fns.HOLDING[0] == 2 and raising_fns.PEAK[0] == 2

    release.touch()
    await wait_until(lambda: raising_fns.HOLDING[0] == 0, timeout=10)
    await wait_until(_slots_free(srv.client), timeout=10)
    assert (await post_task(srv.client, "echo_later", {"x": 1})).json()["result"] == {"x": 1}

    # Cancelled through the API, and a client that left: the same bound.
    release.unlink()
    r = await post_task(srv.client, "hold_thread", hold, mode="webhook", webhook={"url": "http://127.0.0.1:9/"})
    assert r.status_code in (202, 400), r.text
    async with trio.open_nursery() as callers:
        with trio.move_on_after(0.1):  # this caller gives up before its task's timeout
            await post_task(srv.client, "hold_thread", hold)
    await wait_until(lambda: raising_fns.HOLDING[0] >= 1, timeout=10)
    health = (await srv.client.get("/health")).json()
    assert health["slots"]["busy"] >= 1 and health["slots"]["abandoned"] + raising_fns.HOLDING[0] >= 1
    release.touch()
    await wait_until(_slots_free(srv.client), timeout=10)
    assert raising_fns.PEAK[0] == 2
    await srv.client.aclose()


def _slots_free(client):
    async def check() -> bool:
        slots = (await client.get("/health")).json()["slots"]
        return slots["busy"] == 0 and slots["abandoned"] == 0
    return check
