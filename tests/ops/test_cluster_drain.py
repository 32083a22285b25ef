"""A node that drains hands its jobs back at once: they resume on another live worker without
waiting for `expiry_grace_s`, and finish with one row per block."""

from __future__ import annotations

import signal

import httpx
import trio

from ..cluster.clusterutil import free_port, spawn_coordinator, start_cluster
from ..cluster.test_jobs import files_done, query
from ..helpers import wait_until
from ..jobs.jobutil import DATASET, wait_for_status
from .test_drain import stored

GRACE_S = 3.0  # clusterutil.FAST
EXPIRY_GRACE_S = 120  # far beyond the test's deadlines: only a hand-back can move the job in time


async def test_a_draining_node_hands_its_job_to_another_worker_at_once(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, env={"AMP_JOBS_EXPIRY_GRACE_S": str(EXPIRY_GRACE_S)})
    draining, survivor = cluster.nodes
    client = cluster.client
    # The coordinator's own worker is busy with an endless job: the least loaded live worker
    # once node 0 leaves is node 1's.
    blocker = (await client.post("/jobs", json={"dataset": "test/ticks@1.0.0", "start_block": 0,
                                                "node_id": "coord-01"})).json()
    assert blocker["node_id"] == "coord-01", blocker
    job = (await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 19_999,
                                            "node_id": "node-0-w"})).json()
    await wait_until(lambda: files_done(client, job["id"]), timeout=20, interval=0.02)

    signalled = trio.current_time()
    draining.send_signal(signal.SIGTERM)
    assert await draining.wait(timeout=GRACE_S + 10) == 0
    assert trio.current_time() - signalled <= GRACE_S + 2, draining.output.decode(errors="replace")
    assert await files_done(client, job["id"]) < 1000, "the job finished before the drain: make it longer"

    async def moved() -> bool:
        return (await client.get(f"/jobs/{job['id']}")).json()["node_id"] == "node-1-w"

    await wait_until(moved, timeout=15, interval=0.05)
    assert trio.current_time() - signalled < EXPIRY_GRACE_S / 4
    done = await wait_for_status(client, job["id"], "Completed", "Failed", timeout=60)
    assert done["status"] == "Completed" and done["node_id"] == "node-1-w", done
    await wait_until(lambda: b"paused at block" in draining.output, timeout=10)
    progress = (await client.get(f"/jobs/{job['id']}/progress")).json()["tables"]
    assert progress["blocks"]["current_block"] == 19_999
    assert query(cluster.output_dir, "SELECT count(*), count(DISTINCT block_num), min(block_num), max(block_num) "
                 "FROM {blocks}") == [(20_000, 20_000, 0, 19_999)]
    (txs,) = query(cluster.output_dir, "SELECT sum(tx_count) FROM {blocks}")[0]
    assert query(cluster.output_dir, "SELECT count(*), count(DISTINCT (block_num, tx_index)) FROM {transactions}") \
        == [(txs, txs)]


async def test_a_draining_coordinator_pauses_node_jobs_which_resume_when_it_is_back(nursery, tmp_path):
    port = free_port()
    cluster = await start_cluster(nursery, tmp_path, nodes=1, port=port,
                                  env={"AMP_JOBS_EXPIRY_GRACE_S": str(EXPIRY_GRACE_S)})
    (node,) = cluster.nodes
    job = (await cluster.client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 19_999,
                                                    "node_id": "node-0-w"})).json()
    await wait_until(lambda: files_done(cluster.client, job["id"]), timeout=20, interval=0.02)

    signalled = trio.current_time()
    cluster.coordinator.send_signal(signal.SIGTERM)
    assert await cluster.coordinator.wait(timeout=GRACE_S + 10) == 0
    assert trio.current_time() - signalled <= GRACE_S + 2, cluster.coordinator.output.decode(errors="replace")
    assert b"grace period" not in cluster.coordinator.output, "the node's run was not paused in time"
    await wait_until(lambda: b"paused at block" in node.output, timeout=10)
    assert stored(tmp_path / "coord", "SELECT status FROM jobs WHERE id = ?", job["id"]) == [("Running",)]

    restarted = await spawn_coordinator(nursery, tmp_path, cluster.env, port)
    async with httpx.AsyncClient(base_url=restarted.url, headers=cluster.client.headers, timeout=30) as client:
        done = await wait_for_status(client, job["id"], "Completed", "Failed", timeout=60)
    assert done["status"] == "Completed" and done["node_id"] == "node-0-w", done
    assert query(cluster.output_dir, "SELECT count(*), count(DISTINCT block_num) FROM {blocks}") == [(20_000, 20_000)]
