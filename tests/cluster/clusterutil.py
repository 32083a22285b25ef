"""Peers for routing tests: separate server processes on one PostgreSQL database.

Each peer has one worker `<name>-w` with its own slots and groups (config file per peer).
`start_peers` returns once every peer routes to every other (their slots are known)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from ..helpers import ServerProcess, spawn_server, wait_until

API_KEY = "api-secret"
FAST = {  # heartbeats fast enough for tests
    "AMP_REGISTRY_HEARTBEAT_S": "0.25",
    "AMP_REGISTRY_LIVENESS_S": "3.0",
    "AMP_JOBS_WORKER_CHECK_S": "0.25",
    "AMP_JOBS_EXPIRY_GRACE_S": "0.5",
    "AMP_AUTH_API_KEY": API_KEY,
    "AMP_SERVER_SHUTDOWN_GRACE_S": "5",
    "AMP_WEBHOOK_ALLOW_PRIVATE": "true",
    "AMP_FUNCTIONS_MODULES": '["tests.cluster.timed"]',
}


def write_config(path: Path, worker_id: str, groups: list[str], slots: int = 10) -> Path:
    path.write_text(f'[[workers]]\nid = "{worker_id}"\nslots = {slots}\ngroups = {groups!r}\n'.replace("'", '"'))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Peers:
    processes: list[ServerProcess]
    env: dict[str, str]

    def client(self, peer: ServerProcess, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=peer.url, headers={"Authorization": API_KEY, **headers}, timeout=30)


async def spawn_peer(nursery: trio.Nursery, tmp_path: Path, name: str, env: dict[str, str], *,
                     slots: int = 10, groups: tuple[str, ...] = ("default",), port: int = 0) -> ServerProcess:
    config = write_config(tmp_path / f"{name}.toml", f"{name}-w", list(groups), slots)
    return await spawn_server(nursery, tmp_path / name, "--config", str(config), "--bind", f"127.0.0.1:{port}",
                              env=env, timeout=60)


def routes_to(peer: ServerProcess, others: list[ServerProcess]) -> bool:
    return all(f"routing to peer {other.url} ".encode() in peer.output for other in others)


async def start_peers(nursery: trio.Nursery, tmp_path: Path, pg_url: str, *, slots=(10, 10, 10),
                      groups=(("default",),) * 3, env: dict[str, str] | None = None) -> Peers:
    """Peers `p0`, `p1`, ... (one per entry of `slots`), started together."""
    env = {**FAST, "AMP_STORE_URL": pg_url, **(env or {})}
    started: dict[int, ServerProcess] = {}
    async with trio.open_nursery() as starting:
        for i, count in enumerate(slots):
            async def start(i=i, count=count):
                started[i] = await spawn_peer(nursery, tmp_path, f"p{i}", env, slots=count, groups=groups[i])
            starting.start_soon(start)
    processes = [started[i] for i in range(len(slots))]
    await wait_until(lambda: all(routes_to(p, [o for o in processes if o is not p]) for p in processes),
                     timeout=30, interval=0.05)
    return Peers(processes, env)
