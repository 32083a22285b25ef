"""Forwarding rules against real servers: retry on an unreachable node, the error event of a
broken stream, and maintenance keeping a node out of the rotation."""

from __future__ import annotations

import collections
import signal
from functools import partial

import trio

from amp_runtime.cluster.forward import Forwarder
from amp_runtime.cluster.nodes import Join, NodeTable, SlotsPushed
from amp_runtime.cluster.wire import WorkerInfo
from amp_runtime.core.actor import supervise
from amp_runtime.tasks.models import TaskRequest

from ..helpers import wait_until
from .clusterutil import free_port, start_cluster


async def test_a_sync_task_is_retried_once_on_another_node_when_the_first_cannot_be_reached(nursery, server):
    table = NodeTable()
    await nursery.start(partial(supervise, table))
    dead = f"http://127.0.0.1:{free_port()}"
    await table.ask(Join(dead, [WorkerInfo("gone", ["default"], 10, 10)]))
    await table.ask(Join(server.url, [WorkerInfo("worker-01", ["default"], 10, 10)]))
    await table.ask(SlotsPushed(dead, "gone", 10, 10, 0, False))
    await table.ask(SlotsPushed(server.url, "worker-01", 5, 10, 0, False))
    forwarder = Forwarder(table, "key", connect_timeout_s=1.0)
    try:
        first = await forwarder.pick("default")
        assert first.url == dead

        async def another(exclude):
            return await forwarder.pick("default", exclude)

        response = await forwarder.forward(first, TaskRequest(function="echo", contract=1, input=7), another)
        assert response.status_code == 200 and response.headers["X-Amp-Node"] == server.url
        assert b'"result":7' in await response.get_data()
        assert (await forwarder.pick("default")).url == server.url, "the dead node is out until it pushes again"
    finally:
        await forwarder.aclose()


async def test_a_stream_whose_node_dies_ends_with_an_error_event(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1)
    body = {"function": "count", "contract": 1, "mode": "stream", "input": {"n": 50, "delay_ms": 100}}
    lines = []
    async with cluster.client.stream("POST", "/task", json=body) as response:
        async for line in response.aiter_lines():
            lines.append(line)
            if line == 'data: {"i":1}':
                cluster.nodes[0].kill9()
    assert "event: error" in lines, lines[-4:]
    error_data = lines[lines.index("event: error") + 1]
    assert '"NodeLost"' in error_data and len([x for x in lines if x.startswith("data: {\"i\"")]) < 50


async def test_a_node_in_maintenance_receives_no_tasks(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path)
    resting, working = cluster.nodes
    async with cluster.node_client(resting) as node:
        assert (await node.post("/off")).status_code == 200

    async def resting_is_out() -> bool:  # its next /ws/slots push says so
        for _ in range(10):  # both have all slots free: without the push, ties would go to either
            response = await cluster.client.post("/task", json={"function": "echo", "contract": 1, "input": 0})
            if response.headers.get("x-amp-node") != working.url:
                return False
        return True

    await wait_until(resting_is_out, timeout=5, interval=0.05)
    per_node: collections.Counter = collections.Counter()

    async def send() -> None:
        response = await cluster.client.post("/task", json={"function": "echo", "contract": 1, "input": 1})
        assert response.status_code == 200, (response.text, response.headers)
        per_node[response.headers["x-amp-node"]] += 1

    async with trio.open_nursery() as senders:
        for _ in range(60):
            senders.start_soon(send)
    assert per_node == {working.url: 60}


async def test_a_sync_task_on_a_node_that_hangs_answers_502_once_the_node_is_dropped(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1)
    (node,) = cluster.nodes
    answer = {}

    async def send() -> None:
        answer["response"] = await cluster.client.post(
            "/task", json={"function": "sleep", "contract": 1, "input": {"ms": 20_000}})

    nursery.start_soon(send)
    async with cluster.node_client(node) as direct:
        await wait_until(lambda: _busy(direct), timeout=5, interval=0.05)
    node.send_signal(signal.SIGSTOP)  # hung: its channel goes silent, its sockets stay open
    try:
        with trio.fail_after(8):
            await wait_until(lambda: "response" in answer, timeout=8, interval=0.05)
        response = answer["response"]
        assert response.status_code == 502 and response.json()["error_code"] == "NODE_LEFT", response.text
        await wait_until(lambda: b"silent" in cluster.coordinator.output, timeout=5)
    finally:
        node.kill9()


async def _busy(client) -> bool:
    return (await client.get("/health")).json()["slots"]["busy"] == 1


async def test_a_stream_whose_node_hangs_ends_with_an_error_event_once_the_node_is_dropped(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1)
    (node,) = cluster.nodes
    body = {"function": "count", "contract": 1, "mode": "stream", "input": {"n": 100, "delay_ms": 100}}
    lines = []
    try:
        with trio.fail_after(10):
            async with cluster.client.stream("POST", "/task", json=body) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == 'data: {"i":1}':
                        node.send_signal(signal.SIGSTOP)  # hung: sockets open, nothing flows
    finally:
        node.kill9()
    assert "event: error" in lines, lines[-4:]
    assert "left the cluster" in lines[lines.index("event: error") + 1]
