"""Fault injection on a real socket: a slot task, a worker's bookkeeping and the webhook sender
raise mid-load. Every caller (sync, stream, webhook) gets an answer within a deadline and the
process keeps serving."""

import json

import httpx
import pytest
import trio

from amp_runtime.tasks import running as running_module, worker as worker_module
from amp_runtime.tasks.webhooks import WebhookSender

from ..helpers import wait_until
from . import fns
from .receiver import start_receiver

CALL = {"contract": 1}
DEADLINE_S = 15


def is_boom(task) -> bool:
    return isinstance(task.input, dict) and task.input.get("boom") is True


def inject(monkeypatch, fault: str) -> None:
    """Make our own code raise for a task whose input is {"boom": true}."""
    if fault == "slot":
        intact_run = running_module.run_task

        async def run_task(task, expose_tracebacks):
            if is_boom(task):
                raise RuntimeError("injected: slot task")
            await intact_run(task, expose_tracebacks)

        monkeypatch.setattr(running_module, "run_task", run_task)
    else:
        intact_record = worker_module.WorkerActor._record

        def record(self, task):
            if is_boom(task):
                raise RuntimeError("injected: bookkeeping")
            intact_record(self, task)

        monkeypatch.setattr(worker_module.WorkerActor, "_record", record)


@pytest.mark.parametrize("fault", ["slot", "bookkeeping"])
async def test_a_failing_worker_answers_every_caller_and_the_process_keeps_serving(
        fault, server_factory, nursery, monkeypatch):
    receiver = await start_receiver(nursery)
    srv = await server_factory(workers=[{"id": "w", "slots": 3, "max_queue": 50}],
                               webhook={"allow_private": True, "base_delay_s": 0.01})
    worker = srv.runtime.services.tasks.workers["w"]
    client = srv.client
    answers: dict[str, object] = {}

    async def sync(name, input, priority=None):
        r = await client.post("/task", json={"function": "test_gate", "input": input, "priority": priority, **CALL})
        answers[name] = r

    async def stream():
        events = []
        async with client.stream("POST", "/task", json={"function": "test_endless", "mode": "stream", **CALL}) as r:
            async for line in r.aiter_lines():
                if line:
                    events.append(line)
        answers["stream"] = events

    async def webhook(input, priority):
        r = await client.post("/task", json={"function": "echo", "input": input, "mode": "webhook", "priority": priority,
                                             "webhook": {"url": receiver.url}, **CALL})
        assert r.status_code == 202
        return r.json()["id"]

    inject(monkeypatch, fault)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as callers:
            callers.start_soon(stream)  # slot 1
            await wait_until(lambda: worker.state.free == 2)
            callers.start_soon(sync, "finishes", {"gate": f"fault-{fault}-1", "tag": "finishes"})  # slot 2, leased
            callers.start_soon(sync, "leased", {"gate": f"fault-{fault}-never"})  # slot 3, leased
            await wait_until(lambda: worker.state.free == 0)
            callers.start_soon(sync, "queued", {"gate": f"fault-{fault}-never"}, 5)
            await wait_until(lambda: worker.state.queued == 1)
            queued_webhook = await webhook({"queued": True}, 5)
            boom = await webhook({"boom": True}, 1)  # first in line
            fns.gate(f"fault-{fault}-1").set()  # a slot frees; `boom` takes it and its worker fails
    assert answers["finishes"].status_code == 200  # finished before the failure
    for name in ("leased", "queued"):
        r = answers[name]
        assert r.status_code == 500, (name, r.text)
        assert r.json()["error"]["type"] == "WorkerFailed" and "injected" in r.json()["error"]["message"]
    events = answers["stream"]
    assert events[-2] == "event: error"
    assert json.loads(events[-1][len("data: "):])["error"]["type"] == "WorkerFailed"
    await receiver.wait_for(2)
    delivered = receiver.by_task()
    # A webhook task the failure cut short runs again once the worker is back (it is journaled);
    # the one that crashed it fails again and its failure is delivered.
    assert delivered[queued_webhook]["status"] == "completed", delivered[queued_webhook]
    assert delivered[boom]["success"] is False or fault == "bookkeeping"
    if fault == "slot":
        assert delivered[boom]["error"]["type"] == "WorkerFailed"
    monkeypatch.undo()
    r = await client.post("/task", json={"function": "echo", "input": {"after": fault}, **CALL})
    assert r.status_code == 200 and r.json()["result"] == {"after": fault}
    r = await client.post("/task", json={"function": "count", "input": {"n": 2}, "mode": "stream", **CALL})
    assert r.status_code == 200 and "event: end" in r.text
    assert (await client.get("/health")).json()["slots"]["free"] == 3
    await client.aclose()


async def test_a_failing_webhook_delivery_harms_no_other(server_factory, nursery, monkeypatch):
    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True, "base_delay_s": 0.01})
    intact_attempt = WebhookSender._attempt
    intact_payload = WebhookSender._payload

    async def attempt(self, url, headers, payload, number):
        if b'"boom"' in payload and number == 1:
            raise RuntimeError("injected: sender")
        return await intact_attempt(self, url, headers, payload, number)

    def payload(self, body):
        if body.result == {"poison": True}:
            raise RuntimeError("injected: payload")
        return intact_payload(self, body)

    monkeypatch.setattr(WebhookSender, "_attempt", attempt)
    monkeypatch.setattr(WebhookSender, "_payload", payload)
    ids, poisoned = [], None
    with trio.fail_after(DEADLINE_S):
        for i in range(12):
            input = {"boom": i} if i % 3 == 0 else {"poison": True} if i == 4 else {"i": i}
            r = await srv.client.post("/task", json={"function": "echo", "input": input, "mode": "webhook",
                                                     "webhook": {"url": receiver.url}, **CALL})
            assert r.status_code == 202
            if i == 4:
                poisoned = r.json()["id"]
            else:
                ids.append(r.json()["id"])
        await receiver.wait_for(len(ids))  # every other delivery arrives; the `boom` ones on attempt 2
        assert set(receiver.by_task()) == set(ids)

        async def poisoned_recorded():
            view = (await srv.client.get(f"/tasks/{poisoned}")).json()
            return view.get("webhook_status") == "failed"

        await wait_until(poisoned_recorded, timeout=DEADLINE_S)  # answered: recorded as failed
    async with httpx.AsyncClient(base_url=srv.url) as fresh:
        r = await fresh.post("/task", json={"function": "echo", "input": 1, **CALL})
        assert r.json()["result"] == 1
    await srv.client.aclose()
