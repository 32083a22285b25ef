"""Forwarding rules against real servers: retry on an unreachable peer, maintenance keeping a
peer out of the rotation, and a peer that hangs (its slots go silent)."""

from __future__ import annotations

import collections
import signal

import trio

from amp_runtime.cluster.forward import Forwarder
from amp_runtime.cluster.peers import PeerTable, WorkerInfo
from amp_runtime.tasks.models import TaskRequest

from ..helpers import wait_until
from .clusterutil import free_port, start_peers


async def test_a_sync_task_is_retried_once_on_another_peer_when_the_first_cannot_be_reached(server):
    table = PeerTable()
    dead = f"http://127.0.0.1:{free_port()}"
    table.join(dead, [WorkerInfo("gone", ["default"], 10, 10)])
    table.join(server.url, [WorkerInfo("worker-01", ["default"], 10, 10)])
    table.slots_pushed(dead, "gone", 10, 10, 0, False)
    table.slots_pushed(server.url, "worker-01", 5, 10, 0, False)
    forwarder = Forwarder(table, "key", connect_timeout_s=1.0)
    try:
        first = table.pick("default")
        assert first.url == dead

        def another(exclude):
            return table.pick("default", exclude)

        response = await forwarder.forward(first, TaskRequest(function="echo", contract=1, input=7), another)
        assert response.status_code == 200 and response.headers["X-Amp-Node"] == server.url
        assert b'"result":7' in await response.get_data()
        assert table.pick("default").url == server.url, "the dead peer is out until it pushes again"
    finally:
        await forwarder.aclose()


async def test_a_peer_in_maintenance_receives_no_tasks(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 10, 10),
                              groups=(("elsewhere",), ("default",), ("default",)))
    entry, resting, working = peers.processes
    async with peers.client(resting) as direct:
        assert (await direct.post("/off")).status_code == 200
    async with peers.client(entry) as client:
        async def resting_is_out() -> bool:  # its next /ws/slots push says so
            for _ in range(10):
                response = await client.post("/task", json={"function": "echo", "contract": 1, "input": 0})
                if response.headers.get("x-amp-node") != working.url:
                    return False
            return True

        await wait_until(resting_is_out, timeout=5, interval=0.05)
        per_peer: collections.Counter = collections.Counter()

        async def send() -> None:
            response = await client.post("/task", json={"function": "echo", "contract": 1, "input": 1})
            assert response.status_code == 200, (response.text, response.headers)
            per_peer[response.headers["x-amp-node"]] += 1

        async with trio.open_nursery() as senders:
            for _ in range(60):
                senders.start_soon(send)
    assert per_peer == {working.url: 60}


async def _busy(client) -> bool:
    return (await client.get("/health")).json()["slots"]["busy"] == 1


async def test_a_sync_task_on_a_peer_that_hangs_answers_502_once_its_slots_go_silent(nursery, tmp_path, pg_url):
    # Liveness far beyond the slots' silence: the silence is what answers the waiting forward.
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2), groups=(("elsewhere",), ("default",)),
                              env={"AMP_REGISTRY_LIVENESS_S": "30"})
    entry, hung = peers.processes
    answer = {}

    async def send() -> None:
        async with peers.client(entry) as client:
            answer["response"] = await client.post(
                "/task", json={"function": "sleep", "contract": 1, "input": {"ms": 20_000}})

    nursery.start_soon(send)
    async with peers.client(hung) as direct:
        await wait_until(lambda: _busy(direct), timeout=5, interval=0.05)
    hung.send_signal(signal.SIGSTOP)  # hung: its slots go silent, its sockets stay open
    try:
        with trio.fail_after(10):
            await wait_until(lambda: "response" in answer, timeout=10, interval=0.05)
        response = answer["response"]
        assert response.status_code == 502 and response.json()["error_code"] == "NODE_LEFT", response.text
        await wait_until(lambda: b"sent no slots" in entry.output, timeout=5)
    finally:
        hung.kill9()


async def test_a_stream_whose_peer_hangs_ends_with_an_error_event(nursery, tmp_path, pg_url):
    # Liveness far beyond the slots' silence: the silence is what answers the waiting forward.
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2), groups=(("elsewhere",), ("default",)),
                              env={"AMP_REGISTRY_LIVENESS_S": "30"})
    entry, hung = peers.processes
    body = {"function": "count", "contract": 1, "mode": "stream", "input": {"n": 100, "delay_ms": 100}}
    lines = []
    try:
        with trio.fail_after(12):
            async with peers.client(entry) as client, client.stream("POST", "/task", json=body) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == 'data: {"i":1}':
                        hung.send_signal(signal.SIGSTOP)  # hung: sockets open, nothing flows
    finally:
        hung.kill9()
    assert "event: error" in lines, lines[-4:]
    assert "hung" in lines[lines.index("event: error") + 1]


async def test_a_stream_sent_to_a_peer_that_hung_before_answering_ends_with_502(nursery, tmp_path, pg_url):
    # The peer hangs before the stream's first byte (its headers): the forward waits for them,
    # and the slots' silence must answer it as it answers a sync forward (not a wait forever).
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2), groups=(("elsewhere",), ("default",)),
                              env={"AMP_REGISTRY_LIVENESS_S": "30"})
    entry, hung = peers.processes
    hung.send_signal(signal.SIGSTOP)  # its kernel still takes connections; nothing answers
    body = {"function": "count", "contract": 1, "mode": "stream", "input": {"n": 4, "delay_ms": 10}}
    try:
        with trio.fail_after(12):
            async with peers.client(entry) as client:
                response = await client.post("/task", json=body)
    finally:
        hung.kill9()
    assert response.status_code == 502 and response.json()["error_code"] == "NODE_LEFT", response.text
