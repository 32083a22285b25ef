"""A peer that drains (SIGTERM) leaves routing at once: the other peers send it nothing new while
it finishes what it was forwarded, and it exits 0 within its grace. (Its jobs are handed over:
tests/peers/test_jobs_peers.py.)"""

from __future__ import annotations

import collections
import signal

import trio

from ..cluster.clusterutil import start_peers
from ..helpers import wait_until

GRACE_S = 5.0  # clusterutil.FAST


async def test_a_draining_peer_leaves_routing_at_once_and_finishes_its_forwarded_task(nursery, tmp_path, pg_url):
    # Liveness far beyond the test: only the drain's own leaving can take it out of routing in time.
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 4, 4),
                              groups=(("elsewhere",), ("default",), ("default",)),
                              env={"AMP_REGISTRY_LIVENESS_S": "60"})
    entry, draining, staying = peers.processes
    answer = {}
    async with peers.client(entry) as client:
        async def long_task() -> None:
            answer["response"] = await client.post("/task", json={
                "function": "sleep", "contract": 1, "input": {"ms": 2500}, "worker": "p1-w"})

        nursery.start_soon(long_task)
        async with peers.client(draining) as direct:
            async def busy() -> bool:
                return (await direct.get("/health")).json()["slots"]["busy"] == 1

            await wait_until(busy, timeout=5, interval=0.02)
        signalled = trio.current_time()
        draining.send_signal(signal.SIGTERM)
        await wait_until(lambda: f"peer {draining.url} left routing (it drained)".encode() in entry.output,
                         timeout=5, interval=0.02)
        per_peer: collections.Counter = collections.Counter()

        async def send() -> None:
            response = await client.post("/task", json={"function": "echo", "contract": 1, "input": 1})
            assert response.status_code == 200, response.text
            per_peer[response.headers["x-amp-node"]] += 1

        async with trio.open_nursery() as senders:
            for _ in range(20):
                senders.start_soon(send)
        assert per_peer == {staying.url: 20}
        assert await draining.wait(timeout=GRACE_S + 10) == 0
        assert trio.current_time() - signalled <= GRACE_S + 2
        await wait_until(lambda: "response" in answer, timeout=5)
    response = answer["response"]
    assert response.status_code == 200 and response.json()["result"] == {"slept_ms": 2500}, response.text
    assert response.headers["x-amp-node"] == draining.url
