"""Peers for the tests: real server processes on one PostgreSQL database and one output dir."""

from __future__ import annotations

from pathlib import Path

import httpx

from ..durable.util import COUNTER
from ..helpers import spawn_server, wait_until
from ..jobs.jobutil import query

DATASET = "example/blocks@1.0.0"
# Short so a dead peer's workers expire within seconds (the defaults are 1 s / 5 s / 5 s).
FAST = {
    "AMP_REGISTRY_HEARTBEAT_S": "0.25",
    "AMP_REGISTRY_LIVENESS_S": "3.0",
    "AMP_JOBS_WORKER_CHECK_S": "0.25",
    "AMP_JOBS_EXPIRY_GRACE_S": "0.5",
    "AMP_JOBS_BATCH_BLOCKS": "20",
    "AMP_SERVER_SHUTDOWN_GRACE_S": "5",
}


def worker_of(name: str) -> str:
    return f"{name}-w1"


async def spawn_peer(nursery, tmp_path: Path, name: str, pg_url: str, **env: str):
    """One peer named `name` with one worker `<name>-w1`; datasets go to tmp_path/shared."""
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[[workers]]\nid = "{worker_of(name)}"\nslots = 4\n')
    full_env = {**FAST, "AMP_STORE_URL": pg_url, "AMP_JOBS_OUTPUT_DIR": str(tmp_path / "shared" / "datasets"), **env}
    return await spawn_server(nursery, tmp_path / name, "--config", str(config), env=full_env, timeout=60)


async def create_job(client: httpx.AsyncClient, node_id: str, last_block: int) -> dict:
    """POST /jobs for `node_id`, once its heartbeat is in the shared registry."""
    created = {}

    async def accepted():
        response = await client.post(
            "/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": last_block, "node_id": node_id})
        if response.status_code == 400 and response.json()["error_code"] == "INVALID_NODE_ID":
            return False
        assert response.status_code == 201, response.text
        created["job"] = response.json()
        return True

    await wait_until(accepted, timeout=20, interval=0.1)
    return created["job"]


def rows_are_one_per_block(shared: Path, last_block: int) -> None:
    blocks = query(shared, "SELECT count(*), count(DISTINCT block_num), min(block_num), max(block_num) FROM {blocks}")
    assert blocks == [(last_block + 1, last_block + 1, 0, last_block)]
    (txs,) = query(shared, "SELECT sum(tx_count) FROM {blocks}")[0]
    assert query(shared, "SELECT count(*), count(DISTINCT (block_num, tx_index)) FROM {transactions}") == [(txs, txs)]


NAMES = ("a", "b", "c")


async def start_peers(nursery, tmp_path: Path, pg_url: str, names=NAMES, **env: str) -> dict:
    """Peers by name, started one after the other (the first one migrates the database)."""
    return {name: await spawn_peer(nursery, tmp_path, name, pg_url, **env) for name in names}


def clients(peers: dict) -> dict[str, httpx.AsyncClient]:
    return {name: httpx.AsyncClient(base_url=peer.url, timeout=60) for name, peer in peers.items()}


async def close_all(by_name: dict[str, httpx.AsyncClient]) -> None:
    for client in by_name.values():
        await client.aclose()


def log_of(peer) -> str:
    return peer.output.decode(errors="replace")


async def everywhere(by_name: dict[str, httpx.AsyncClient], predicate, *, timeout: float = 10) -> None:
    """Until the async `predicate(client)` holds at every peer."""
    async def all_hold():
        for client in by_name.values():
            if not await predicate(client):
                return False
        return True

    await wait_until(all_hold, timeout=timeout, interval=0.05)


def lease_owner(pg_url: str, name: str, template_id: str = COUNTER) -> str | None:
    """The owner in the lease row of durable worker `name`, read from the store."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT owner FROM durable_leases WHERE worker = %s", [f"{template_id}.{name}"]).fetchone()
    return None if row is None else row[0]
