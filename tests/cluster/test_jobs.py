"""Jobs across nodes: assigned over the node channel, progress persisted by the coordinator,
moved to another node when theirs dies, resumed when the coordinator restarts."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx

from ..helpers import wait_until
from ..jobs.jobutil import DATASET, wait_for_status
from .clusterutil import free_port, spawn_coordinator, start_cluster


def query(output: Path, sql: str) -> list[tuple]:
    root = output / "example" / "blocks" / "1.0.0"
    conn = duckdb.connect()
    try:
        return conn.execute(sql.format(blocks=f"read_parquet('{root / 'blocks'}/*.parquet')",
                                       transactions=f"read_parquet('{root / 'transactions'}/*.parquet')")).fetchall()
    finally:
        conn.close()


async def files_done(client, job_id: int) -> int:
    tables = (await client.get(f"/jobs/{job_id}/progress")).json()["tables"]
    return min((t["files_count"] for t in tables.values()), default=0) if len(tables) == 2 else 0


async def test_a_job_runs_on_a_node_and_moves_to_the_other_when_it_is_killed(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path)
    doomed, survivor = cluster.nodes
    client = cluster.client
    # The coordinator's own worker is busy with an endless job: the least loaded worker left
    # when node 0 dies is node 1's.
    blocker = (await client.post("/jobs", json={"dataset": "test/ticks@1.0.0", "start_block": 0,
                                                "node_id": "coord-01"})).json()
    assert blocker["node_id"] == "coord-01", blocker
    job = (await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 11_999,
                                            "node_id": "node-0-w"})).json()
    assert job["node_id"] == "node-0-w", job

    # Progress written on the node is persisted by the coordinator.
    await wait_until(lambda: files_done(client, job["id"]), timeout=20, interval=0.02)
    assert (await client.get(f"/jobs/{job['id']}")).json()["status"] == "Running"
    await wait_until(lambda: b"running job" in doomed.output, timeout=5)

    doomed.kill9()
    await doomed.wait()
    assert await files_done(client, job["id"]) < 600, "the job finished before the kill: make it longer"

    done = await wait_for_status(client, job["id"], "Completed", "Failed", timeout=40)
    assert done["status"] == "Completed" and done["node_id"] == "node-1-w", done
    await wait_until(lambda: b"running job" in survivor.output, timeout=5)
    progress = (await client.get(f"/jobs/{job['id']}/progress")).json()["tables"]
    assert progress["blocks"]["current_block"] == 11_999
    assert query(cluster.output_dir, "SELECT count(*), count(DISTINCT block_num), min(block_num), max(block_num) "
                 "FROM {blocks}") == [(12_000, 12_000, 0, 11_999)]
    (txs,) = query(cluster.output_dir, "SELECT sum(tx_count) FROM {blocks}")[0]
    assert query(cluster.output_dir, "SELECT count(*), count(DISTINCT (block_num, tx_index)) FROM {transactions}") \
        == [(txs, txs)]


async def test_after_a_coordinator_restart_nodes_rejoin_and_the_job_resumes(nursery, tmp_path):
    port = free_port()
    cluster = await start_cluster(nursery, tmp_path, nodes=1, port=port, env={"AMP_JOBS_EXPIRY_GRACE_S": "8"})
    (node,) = cluster.nodes
    job = (await cluster.client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 11_999,
                                                    "node_id": "node-0-w"})).json()
    await wait_until(lambda: files_done(cluster.client, job["id"]), timeout=20, interval=0.02)
    cluster.coordinator.kill9()
    await cluster.coordinator.wait()
    joined_before = node.output.count(b"cluster: joined")

    restarted = await spawn_coordinator(nursery, tmp_path, cluster.env, port)
    async with httpx.AsyncClient(base_url=restarted.url, headers=cluster.client.headers, timeout=30) as client:
        done = await wait_for_status(client, job["id"], "Completed", "Failed", timeout=40)
    assert done["status"] == "Completed" and done["node_id"] == "node-0-w", done
    assert node.output.count(b"cluster: joined") > joined_before
    assert query(cluster.output_dir, "SELECT count(*), count(DISTINCT block_num) FROM {blocks}") == [(12_000, 12_000)]


async def test_a_stop_request_reaches_the_node_running_the_job(nursery, tmp_path):
    cluster = await start_cluster(nursery, tmp_path, nodes=1)
    client = cluster.client
    job = (await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "node_id": "node-0-w"})).json()
    await wait_until(lambda: files_done(client, job["id"]), timeout=20, interval=0.02)
    stopping = (await client.put(f"/jobs/{job['id']}/stop")).json()
    assert stopping["status"] in ("StopRequested", "Stopping", "Stopped"), stopping
    done = await wait_for_status(client, job["id"], "Stopped", "Failed", timeout=20)
    assert done["status"] == "Stopped", done
    progress = (await client.get(f"/jobs/{job['id']}/progress")).json()["tables"]
    (blocks,) = query(cluster.output_dir, "SELECT count(*) FROM {blocks}")[0]
    assert progress["blocks"]["current_block"] + 1 == blocks, "every file written was reported before Stopped"
