"""Credentials between peers: the cluster key is accepted like the API key; a peer with a
wrong cluster key is refused by the others (and says why) and nothing is routed to it; without
a cluster key a forwarded task carries the client's own Authorization header."""

from __future__ import annotations

from ..helpers import wait_until
from .clusterutil import API_KEY, routes_to, spawn_peer, start_peers

KEY = "cluster-secret"


async def test_the_cluster_key_is_accepted_like_the_api_key_on_a_peer(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2,), env={"AMP_CLUSTER_KEY": KEY})
    async with peers.client(peers.processes[0]) as client:
        for credential, status in ((f"Bearer {KEY}", 200), (API_KEY, 200), ("Bearer wrong", 401)):
            response = await client.get("/logs", headers={"Authorization": credential})
            assert response.status_code == status, credential


async def test_forwarding_with_a_cluster_key_and_a_peer_with_a_wrong_one(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2), groups=(("elsewhere",), ("default",)),
                              env={"AMP_CLUSTER_KEY": KEY})
    entry, target = peers.processes
    async with peers.client(entry) as client:
        response = await client.post("/task", json={"function": "echo", "contract": 1, "input": 3})
        assert response.status_code == 200 and response.headers["x-amp-node"] == target.url, response.text

    stranger = await spawn_peer(nursery, tmp_path, "stranger", {**peers.env, "AMP_CLUSTER_KEY": "not-the-key"},
                                groups=("default",))
    await wait_until(lambda: f"peer {stranger.url} joined routing".encode() in entry.output, timeout=15)
    await wait_until(lambda: f"peer {entry.url} refused our slots watch".encode() in stranger.output, timeout=15)
    await wait_until(lambda: f"peer {stranger.url} refused our slots watch".encode() in entry.output, timeout=15)
    assert not routes_to(entry, [stranger])
    async with peers.client(entry) as client:
        for _ in range(10):
            response = await client.post("/task", json={"function": "echo", "contract": 1, "input": 4})
            assert response.headers["x-amp-node"] == target.url, response.text
