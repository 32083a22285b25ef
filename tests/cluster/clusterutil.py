"""A coordinator and nodes as separate processes on loopback ports, one config file each."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from ..helpers import ServerProcess, spawn_server, wait_until

KEY = "cluster-secret"
API_KEY = "api-secret"
FAST = {  # heartbeats and job moves fast enough for tests
    "AMP_REGISTRY_HEARTBEAT_S": "1.0",  # a node silent for 2 s is dropped: slack for a loaded machine
    "AMP_JOBS_WORKER_CHECK_S": "0.2",
    "AMP_JOBS_EXPIRY_GRACE_S": "1",
    "AMP_JOBS_BATCH_BLOCKS": "20",
    "AMP_AUTH_API_KEY": API_KEY,
    "AMP_SERVER_SHUTDOWN_GRACE_S": "3",
    "AMP_WEBHOOK_ALLOW_PRIVATE": "true",
}


def write_config(path: Path, worker_id: str, groups: list[str], slots: int = 10) -> Path:
    path.write_text(f'[[workers]]\nid = "{worker_id}"\nslots = {slots}\ngroups = {groups!r}\n'.replace("'", '"'))
    return path


@dataclass
class Cluster:
    coordinator: ServerProcess
    nodes: list[ServerProcess]
    client: httpx.AsyncClient  # to the coordinator, with the API key
    output_dir: Path
    env: dict[str, str]

    def node_client(self, node: ServerProcess) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=node.url, headers={"Authorization": API_KEY}, timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def spawn_coordinator(nursery: trio.Nursery, tmp_path: Path, env: dict[str, str], port: int = 0) -> ServerProcess:
    return await spawn_server(
        nursery, tmp_path / "coord", "--config",
        str(write_config(tmp_path / "coord.toml", "coord-01", ["coordinator-only"])),
        "--bind", f"127.0.0.1:{port}",
        env={**env, "AMP_FUNCTIONS_MODULES": '["tests.cluster.extra_dataset"]'})


async def start_cluster(nursery: trio.Nursery, tmp_path: Path, nodes: int = 2, *, node_key: str = KEY,
                        wait_joined: bool = True, port: int = 0, env: dict[str, str] | None = None) -> Cluster:
    """The coordinator's only local worker serves group "coordinator-only", so every task of
    the built-in functions (group "default") it answers was forwarded to a node."""
    output = tmp_path / "datasets"
    env = {**FAST, "AMP_CLUSTER_KEY": KEY, "AMP_JOBS_OUTPUT_DIR": str(output), **(env or {})}
    coordinator = await spawn_coordinator(nursery, tmp_path, env, port)
    started = []
    async with trio.open_nursery() as starting:
        for i in range(nodes):
            async def start(i=i):
                config = write_config(tmp_path / f"node{i}.toml", f"node-{i}-w", ["default"])
                started.append((i, await spawn_server(
                    nursery, tmp_path / f"node{i}", "--config", str(config),
                    env={**env, "AMP_CLUSTER_KEY": node_key, "AMP_CLUSTER_JOIN": coordinator.url})))
            starting.start_soon(start)
    processes = [p for _, p in sorted(started, key=lambda item: item[0])]
    client = httpx.AsyncClient(base_url=coordinator.url, headers={"Authorization": API_KEY}, timeout=30)
    cluster = Cluster(coordinator, processes, client, output, env)
    if wait_joined:
        await wait_until(lambda: all(b"cluster: joined" in p.output for p in processes), timeout=15)
        await wait_until(lambda: _forwards_to_all(cluster), timeout=15, interval=0.05)
    return cluster


async def _forwards_to_all(cluster: Cluster) -> bool:
    """True once a burst of tasks reaches every node (each node's slots are known)."""
    async def one(seen: set) -> None:
        response = await cluster.client.post("/task", json={"function": "sleep", "contract": 1, "input": {"ms": 20}})
        if response.status_code == 200:
            seen.add(response.headers.get("x-amp-node"))

    seen: set = set()
    async with trio.open_nursery() as burst:
        for _ in range(4 * len(cluster.nodes)):
            burst.start_soon(one, seen)
    return seen >= {p.url for p in cluster.nodes}
