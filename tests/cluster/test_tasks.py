"""Tasks through the coordinator: spread over the nodes by free slots, all three modes."""

from __future__ import annotations

import collections
import time

import trio

from .clusterutil import start_cluster


async def test_200_sync_tasks_are_spread_over_both_nodes_with_correct_results(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path)
    per_node: collections.Counter = collections.Counter()
    wrong = []

    async def send(i: int) -> None:
        response = await cluster.client.post("/task", json={"function": "echo", "contract": 1, "input": {"i": i}})
        body = response.json()
        if response.status_code != 200 or body["result"] != {"i": i}:
            wrong.append((response.status_code, body))
        per_node[response.headers.get("x-amp-node")] += 1

    async with trio.open_nursery() as senders:
        for i in range(200):
            senders.start_soon(send, i)
    assert not wrong, wrong[:3]
    assert set(per_node) == {node.url for node in cluster.nodes}, per_node
    assert min(per_node.values()) >= 20, f"each node gets a share: {per_node}"


async def test_stream_through_the_coordinator_delivers_the_first_event_before_the_function_ends(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1)
    body = {"function": "count", "contract": 1, "mode": "stream", "input": {"n": 4, "delay_ms": 400}}
    started = time.monotonic()
    async with cluster.client.stream("POST", "/task", json=body) as response:
        assert response.status_code == 200
        assert response.headers["x-amp-node"] == cluster.nodes[0].url
        events = []
        async for line in response.aiter_lines():
            if line.startswith("data: ") and not events:
                first_after = time.monotonic() - started
            if line:
                events.append(line)
    total = time.monotonic() - started
    assert first_after < 0.8 < 1.2 <= total, (first_after, total)
    assert events[0] == 'data: {"i":0}' and "event: end" in events


async def test_webhook_mode_is_forwarded_and_accepted(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1)
    response = await cluster.client.post("/task", json={
        "function": "echo", "contract": 1, "mode": "webhook", "input": 1,
        "webhook": {"url": cluster.coordinator.url + "/health"}})
    assert response.status_code == 202, response.text
    assert response.headers["x-amp-node"] == cluster.nodes[0].url
    task_id = response.json()["id"]
    async with cluster.node_client(cluster.nodes[0]) as node:
        view = (await node.get(f"/tasks/{task_id}")).json()
    assert view["result"] == 1 and view["status"] == "completed", view


async def test_a_task_naming_a_worker_on_a_node_goes_to_that_node(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path)
    for index, node in enumerate(cluster.nodes):
        response = await cluster.client.post("/task", json={
            "function": "hello", "contract": 1, "input": {"name": "node"}, "worker": f"node-{index}-w"})
        assert response.status_code == 200 and response.json()["result"] == "Hello, node!"
        assert response.headers["x-amp-node"] == node.url
    unknown = await cluster.client.post("/task", json={"function": "hello", "contract": 1, "input": {},
                                                       "worker": "nowhere"})
    assert unknown.status_code == 400 and "nowhere" in unknown.json()["error_message"]
