"""A peer killed and started again on a new port: a task pinned to its worker from another peer
is routed to the new address as soon as that peer answers /health, and the dead address is out
of routing from the first refused connection on (503 `NODE_UNREACHABLE`, never 400)."""

from __future__ import annotations

from ..helpers import wait_until
from .clusterutil import spawn_peer, start_peers

PINNED = {"function": "echo", "contract": 1, "input": 7, "worker": "p1-w"}


async def _restart_on_a_new_port(nursery, tmp_path, peers, dead):
    await dead.wait()
    again = await spawn_peer(nursery, tmp_path, "p1", peers.env)
    assert again.url != dead.url
    async with peers.client(again) as direct:
        async def healthy() -> bool:
            return (await direct.get("/health")).status_code == 200

        await wait_until(healthy, timeout=10, interval=0.01)
    return again


async def test_a_pinned_task_reaches_a_restarted_peer_as_soon_as_it_answers_health(nursery, tmp_path, pg_url):
    # The dead peer's row stays live throughout: only the new life's announcement can win.
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(10, 10), env={"AMP_REGISTRY_LIVENESS_S": "30"})
    entry, victim = peers.processes
    async with peers.client(entry) as client:
        assert (await client.post("/task", json=PINNED)).headers["x-amp-node"] == victim.url
        victim.kill9()
        await victim.wait()  # gone: its port refuses connections
        for _ in range(2):
            refused = await client.post("/task", json=PINNED)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error_code"] == "NODE_UNREACHABLE" and "retry-after" in refused.headers
        # The first refusal took the address out of routing: the second was not dialled.
        assert entry.output.count(f"peer {victim.url} unreachable".encode()) == 1, entry.output.decode()
        again = await _restart_on_a_new_port(nursery, tmp_path, peers, victim)
        answer = await client.post("/task", json=PINNED)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-amp-node"] == again.url and answer.json()["result"] == 7


async def test_a_pinned_task_reaches_a_restarted_peer_that_had_left_routing(nursery, tmp_path, pg_url):
    # The dead peer's row went stale before it came back: the entry peer's table was empty.
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(10, 10))
    entry, victim = peers.processes
    victim.kill9()
    await wait_until(lambda: f"peer {victim.url} left routing".encode() in entry.output, timeout=20)
    again = await _restart_on_a_new_port(nursery, tmp_path, peers, victim)
    async with peers.client(entry) as client:
        answer = await client.post("/task", json=PINNED)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-amp-node"] == again.url
