"""The cluster key: a node with the wrong one is refused with 401 and says why."""

from __future__ import annotations

import pytest
from trio_websocket import ConnectionRejected, open_websocket_url

from ..helpers import spawn_server, wait_until
from .clusterutil import API_KEY, KEY, start_cluster, write_config


async def test_a_node_with_a_wrong_cluster_key_is_refused_with_401_and_logs_why(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1, node_key="not-the-key", wait_joined=False)
    (node,) = cluster.nodes
    await wait_until(lambda: b"refused this node (wrong cluster key, HTTP 401)" in node.output, timeout=10)
    await wait_until(lambda: b"refused a node" in cluster.coordinator.output, timeout=10)
    assert b"cluster: joined" not in node.output

    ws_url = "ws" + cluster.coordinator.url[4:] + "/ws/cluster/node"
    for headers in ([], [("Authorization", "Bearer wrong")], [("Authorization", API_KEY)]):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(ws_url, extra_headers=headers):
                pass
        assert refused.value.status_code == 401


async def test_the_cluster_key_is_accepted_like_the_api_key_on_a_cluster_process(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1, wait_joined=False)
    for credential, status in ((f"Bearer {KEY}", 200), (API_KEY, 200), ("Bearer wrong", 401)):
        response = await cluster.client.get("/logs", headers={"Authorization": credential})
        assert response.status_code == status, credential


async def test_a_node_whose_worker_id_is_taken_is_refused_and_leaves_the_registry_alone(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1)
    config = write_config(tmp_path / "clash.toml", "node-0-w", ["default"])
    clash = await spawn_server(nursery, tmp_path / "clash", "--config", str(config),
                               env={**cluster.env, "AMP_CLUSTER_JOIN": cluster.coordinator.url})
    await wait_until(lambda: b"a worker id is already in the cluster" in clash.output, timeout=10)
    # The coordinator logs the refusal around the time it answers; its output is read by another task.
    await wait_until(lambda: b"already in the cluster" in cluster.coordinator.output, timeout=10)
    workers = (await cluster.client.post("/workers.get_all", json={})).json()["data"]["workers"]
    (owner,) = [w for w in workers if w["id"] == "node-0-w"]
    assert f"amp-url={cluster.nodes[0].url}" in owner["system_tags"]
