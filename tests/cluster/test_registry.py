"""Nodes in the coordinator's registry: registered with their URL, reporting machine stats,
gone on graceful shutdown (unregister) or after their timeout when killed."""

from __future__ import annotations

import signal

from ..helpers import wait_until
from .clusterutil import start_cluster


async def registered(client) -> dict[str, dict]:
    response = await client.post("/workers.get_all", json={})
    assert response.status_code == 200, response.text
    return {w["id"]: w for w in response.json()["data"]["workers"]}


async def test_nodes_report_to_the_coordinators_registry_and_leave_it(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, env={"AMP_CLUSTER_REGISTER_TIMEOUT_S": "2"})
    stopping, killed = cluster.nodes
    client = cluster.client

    async def both_reported() -> bool:
        workers = await registered(client)
        return all(workers.get(w, {}).get("last_report_time") for w in ("node-0-w", "node-1-w"))

    await wait_until(both_reported, timeout=10, interval=0.1)
    worker = (await registered(client))["node-0-w"]
    assert f"amp-url={stopping.url}" in worker["system_tags"] and [q["id"] for q in worker["queues"]] == ["default"]

    stats = await client.post("/workers.get_stats", json={
        "worker_ids": ["node-1-w"], "from_date": 0, "to_date": 4_000_000_000, "interval": 60,
        "items": [{"key": "memory_free", "aggregation": "avg"}]})
    assert stats.status_code == 200, stats.text
    metrics = stats.json()["data"]["workers"][0]["metrics"]
    assert metrics and metrics[0]["stats"][0]["values"][0] > 0, metrics

    stopping.send_signal(signal.SIGTERM)
    assert await stopping.wait() == 0
    assert "node-0-w" not in await registered(client), "unregistered on graceful shutdown"

    killed.kill9()
    await killed.wait()
    await wait_until(lambda: _gone(client, "node-1-w"), timeout=10, interval=0.2)


async def _gone(client, worker: str) -> bool:
    return worker not in await registered(client)
