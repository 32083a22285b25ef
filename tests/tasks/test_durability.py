"""Accepted webhook tasks survive kill -9: a real server process, a real webhook receiver.

Before the kill, webhook tasks are delivered, awaiting a retry, running and queued; after a
restart on the same data dir every accepted task is delivered at least once, each delivery
carries the dedupe headers, and `GET /tasks/{id}` answers for all of them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

import httpx
import msgspec

from ..helpers import spawn_server, wait_until
from ..pg import on_both_stores, store_env
from .receiver import serve_webhooks

CONFIG = """
[[workers]]
id = "w1"
slots = 2
max_queue = 100

[webhook]
allow_private = true
base_delay_s = 0.2
max_delay_s = 0.4
attempts = 1000

[functions]
modules = ["tests.tasks.durable_fns"]
"""


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: dict
    status: int


@dataclass
class Receiver:
    """Answers 500 on `/fail` until `healed`, 200 otherwise; records every call."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    healed: bool = False

    def delivered(self, task_id: str) -> bool:
        return any(c.status == 200 and c.body["id"] == task_id for c in self.calls)

    def attempts(self, task_id: str) -> list[int]:
        return [int(c.headers["x-amp-delivery-attempt"]) for c in self.calls if c.body["id"] == task_id]


async def start_receiver(nursery) -> Receiver:
    receiver = Receiver()

    def answer(scope, body: bytes) -> int:
        status = 500 if scope["path"] == "/fail" and not receiver.healed else 200
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        receiver.calls.append(Call(scope["path"], headers, msgspec.json.decode(body), status))
        return status

    receiver.url = await serve_webhooks(nursery, answer)
    return receiver


async def submit(client: httpx.AsyncClient, receiver: Receiver, function: str, input: dict, *,
                 path: str = "/hook", key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    r = await client.post("/task", headers=headers, json={
        "function": function, "input": input, "contract": 1, "mode": "webhook",
        "webhook": {"url": receiver.url + path}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


async def status_of(client: httpx.AsyncClient, task_id: str) -> str:
    return (await client.get(f"/tasks/{task_id}")).json().get("status")


async def test_kill9_keeps_every_accepted_webhook_task(nursery, tmp_path, store_url):
    receiver = await start_receiver(nursery)
    config, data, gate = tmp_path / "config.toml", tmp_path / "data", tmp_path / "gate"
    config.write_text(CONFIG)
    env = store_env(store_url)
    first = await spawn_server(nursery, data, "--config", str(config), env=env)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        done = await submit(client, receiver, "hello", {"name": "before"})
        await wait_until(lambda: receiver.delivered(done), timeout=20)
        retrying = [await submit(client, receiver, "hello", {"name": f"r{i}"}, path="/fail") for i in range(2)]
        await wait_until(lambda: all(len(receiver.attempts(t)) >= 2 for t in retrying), timeout=20)
        gated = {"gate": str(gate)}
        running = [await submit(client, receiver, "test_file_gate", {**gated, "tag": f"run{i}"}) for i in range(2)]
        for task_id in running:
            await wait_until(lambda: _is(client, task_id, "running"), timeout=20)
        queued = [await submit(client, receiver, "test_file_gate", {**gated, "tag": f"q{i}"}) for i in range(2)]
        keyed_body = {**gated, "tag": "keyed"}
        queued.append(await submit(client, receiver, "test_file_gate", keyed_body, key="durable-key-1"))
        for task_id in queued:
            assert await status_of(client, task_id) == "queued"
    attempts_before = {t: max(receiver.attempts(t)) for t in retrying}
    first.kill9()
    await first.wait()

    gate.touch()
    receiver.healed = True
    second = await spawn_server(nursery, data, "--config", str(config), env=env)
    accepted = [done, *retrying, *running, *queued]
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
        await wait_until(lambda: all(receiver.delivered(t) for t in accepted), timeout=60)
        for call in receiver.calls:  # every delivery names its task and its attempt
            assert call.headers["x-amp-task-id"] == call.body["id"]
            assert int(call.headers["x-amp-delivery-attempt"]) >= 1
        for task_id in accepted:
            numbers = receiver.attempts(task_id)
            assert len(numbers) == len(set(numbers)), f"attempt numbers reused for {task_id}: {numbers}"
        for task_id in retrying:  # the retry resumed after the restart, numbering continued
            assert receiver.attempts(task_id)[-1] > attempts_before[task_id]
        results = {c.body["id"]: c.body for c in receiver.calls if c.status == 200}
        assert [results[t]["result"] for t in running] == ["run0", "run1"]
        assert [results[t]["result"] for t in queued] == ["q0", "q1", "keyed"]
        assert results[done]["result"] == "Hello, before!"

        for task_id in accepted:  # GET /tasks/{id} answers across the restart
            await wait_until(lambda: _delivered_view(client, task_id), timeout=20)
        view = (await client.get(f"/tasks/{done}")).json()
        assert view["status"] == "completed" and view["result"] == "Hello, before!"
        assert view["deliveries"][-1]["status_code"] == 200

        # The key was journaled with its task: the same request is the same task, another is 422.
        same = await client.post("/task", headers={"Idempotency-Key": "durable-key-1"}, json={
            "function": "test_file_gate", "input": keyed_body, "contract": 1, "mode": "webhook",
            "webhook": {"url": receiver.url + "/hook"}})
        assert same.status_code == 202 and same.json()["id"] == queued[-1]
        other = await client.post("/task", headers={"Idempotency-Key": "durable-key-1"}, json={
            "function": "hello", "input": {}, "contract": 1, "mode": "webhook",
            "webhook": {"url": receiver.url + "/hook"}})
        assert other.status_code == 422 and other.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    second.kill9()


async def _is(client, task_id: str, status: str) -> bool:
    return await status_of(client, task_id) == status


async def _delivered_view(client, task_id: str) -> bool:
    view = (await client.get(f"/tasks/{task_id}")).json()
    return view.get("webhook_status") == "delivered" and view.get("status") == "completed"


async def test_sigterm_then_restart_delivers_queued_webhook_tasks(nursery, tmp_path):
    """A drain that runs out of grace leaves queued webhook tasks to the next start."""
    receiver = await start_receiver(nursery)
    config, data, gate = tmp_path / "config.toml", tmp_path / "data", tmp_path / "gate"
    config.write_text(CONFIG + "\n[server]\nshutdown_grace_s = 0.5\n")
    first = await spawn_server(nursery, data, "--config", str(config))
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        ids = [await submit(client, receiver, "test_file_gate", {"gate": str(gate), "tag": f"t{i}"})
               for i in range(4)]
    first.send_signal(signal.SIGTERM)
    assert await first.wait() == 0
    assert not receiver.calls
    gate.touch()
    second = await spawn_server(nursery, data, "--config", str(config))
    await wait_until(lambda: all(receiver.delivered(t) for t in ids), timeout=60)
    second.kill9()


@on_both_stores
async def test_a_refused_webhook_task_is_not_journaled(server_factory):
    """A 429 is no promise: the task accepted into the journal first is forgotten again."""
    srv = await server_factory(workers=[{"id": "w-01", "slots": 1, "max_queue": 1}], webhook={"allow_private": True})
    task = {"function": "sleep", "input": {"ms": 3000}, "contract": 1, "mode": "webhook",
            "webhook": {"url": "http://127.0.0.1:9/hook"}}
    statuses = [(await srv.client.post("/task", json=task)).status_code for _ in range(4)]
    assert statuses == [202, 202, 429, 429], statuses
    assert await srv.runtime.store.execute("SELECT count(*) FROM webhook_tasks") == [(2,)]
    await srv.client.aclose()
