"""The worker registry on three peers over one PostgreSQL store (real processes).

Any peer answers for every worker from the shared table: a worker registered at one peer shows
with its latest report at the others; a ClearML client whose register and reports reach
different peers (a load balancer) stays registered; a silent worker expires once, for every
peer; a killed peer's own workers expire everywhere and come back under the same ids when it
restarts; a second process claiming a live worker id exits 2.
"""

from __future__ import annotations

import itertools
import re
import time

import httpx
import trio

from ..helpers import spawn_server, wait_until
from ..registry.util import call, run_clearml_client, worker_ids
from ..tasks.receiver import serve_http
from .peerutil import NAMES, clients, close_all, everywhere, spawn_peer, start_peers, worker_of

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


async def listed(client, worker: str) -> dict | None:
    """The worker as `workers.get_all` lists it (registered and unexpired), else None."""
    workers = (await call(client, "workers.get_all", {"last_seen": "none"}))["workers"]
    return next((w for w in workers if w["id"] == worker), None)


def expiry_lines(peers, worker: str) -> list[str]:
    pattern = re.compile(rf"worker\(s\) expired: .*\b{re.escape(worker)}\b")
    return [line for peer in peers.values() for line in peer.output.decode(errors="replace").splitlines()
            if pattern.search(line)]


def report(worker: str, **fields) -> dict:
    return {"worker": worker, "timestamp": int(time.time() * 1000), **fields}


async def test_a_worker_registered_at_one_peer_shows_with_its_latest_report_at_every_peer(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    a, b, c = by_name["a"], by_name["b"], by_name["c"]
    try:
        # Every peer's own workers are on every peer's list.
        own = sorted(worker_of(name) for name in NAMES)

        async def all_own(client):
            return set(own) <= set(await worker_ids(client))

        await everywhere(by_name, all_own)
        assert [w["node_id"] for w in (await c.get("/workers")).json()["workers"]] == own

        await call(a, "workers.register", {"worker": "agent-1", "tags": ["gpu"], "queues": ["q1"], "timeout": 60})

        async def sees_agent(client):
            return (await listed(client, "agent-1")) is not None

        await everywhere(by_name, sees_agent, timeout=5)
        created = {(await client.get("/workers/agent-1")).json()["created_at"] for client in by_name.values()}
        assert len(created) == 1

        # A report through b: its task shows at c; what it did not say (tags, queues) is kept.
        await call(b, "workers.status_report", report("agent-1", task="t-1", queue="q1"))

        async def shows_task(client):
            worker = await listed(client, "agent-1")
            return worker is not None and worker["task"] == {"id": "t-1", "name": "t-1"}

        await everywhere(by_name, shows_task, timeout=5)
        worker = await listed(c, "agent-1")
        assert worker["tags"] == ["gpu"] and worker["queues"] == [{"id": "q1", "name": "q1"}]
        heartbeats = {(await client.get("/workers/agent-1")).json()["heartbeat_at"] for client in by_name.values()}
        assert len(heartbeats) == 1

        # Unregistered through c: gone from every peer's list (still known to GET /workers).
        await call(c, "workers.unregister", {"worker": "agent-1"})

        async def agent_gone(client):
            return (await listed(client, "agent-1")) is None

        await everywhere(by_name, agent_gone, timeout=5)
        assert (await a.get("/workers/agent-1")).status_code == 200
    finally:
        await close_all(by_name)


async def test_reports_alternating_between_two_peers_keep_a_worker_registered_past_its_timeout(
        nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    a, b = by_name["a"], by_name["b"]
    try:
        await call(a, "workers.register", {"worker": "balanced", "timeout": 3})
        registered = (await listed(a, "balanced"))["register_time"]
        deadline = trio.current_time() + 8  # well past its 3 s timeout
        turn = 0
        while trio.current_time() < deadline:
            await call((a, b)[turn % 2], "workers.status_report", report("balanced", task=f"t-{turn}"))
            turn += 1
            for client in by_name.values():  # listed at every peer all along, never re-registered
                worker = await listed(client, "balanced")
                assert worker is not None and worker["register_time"] == registered, worker
            await trio.sleep(0.5)
        assert expiry_lines(peers, "balanced") == []
    finally:
        await close_all(by_name)


async def test_a_worker_that_stops_reporting_expires_once_for_every_peer(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    try:
        await call(by_name["a"], "workers.register", {"worker": "quiet", "timeout": 2})
        await call(by_name["b"], "workers.status_report", report("quiet"))

        async def quiet_gone(client):
            return (await listed(client, "quiet")) is None

        await everywhere(by_name, quiet_gone, timeout=20)
        await wait_until(lambda: expiry_lines(peers, "quiet"), timeout=10, interval=0.05)
        await trio.sleep(1.5)  # a few more expiry rounds on every peer: none of them expires it again
        assert len(expiry_lines(peers, "quiet")) == 1, [peer.output.decode()[-2000:] for peer in peers.values()]
        for name in NAMES:
            assert worker_of(name) in await worker_ids(by_name[name])  # the peers' own workers live on
    finally:
        await close_all(by_name)


async def test_kill9_of_a_peer_expires_its_workers_everywhere_and_a_restart_registers_them_again(
        nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    victim = worker_of("b")
    try:
        async def sees_victim(client):
            return victim in await worker_ids(client)

        await everywhere(by_name, sees_victim)
        before = (await by_name["a"].get(f"/workers/{victim}")).json()

        peers["b"].kill9()
        await peers["b"].wait()
        survivors = {name: by_name[name] for name in ("a", "c")}

        async def victim_gone(client):
            return victim not in await worker_ids(client)

        # Own workers carry `liveness_s` (3 s here) as their timeout on a shared store.
        await everywhere(survivors, victim_gone, timeout=20)  # out of the lists once its timeout passed
        await wait_until(lambda: expiry_lines(peers, victim), timeout=10, interval=0.05)  # then marked, by one peer
        await trio.sleep(1.5)
        assert len(expiry_lines(peers, victim)) == 1
        for name, client in survivors.items():
            assert worker_of(name) in await worker_ids(client)  # the survivors' own workers stay

        # Restarted: the same id, the same row (created_at kept), registered again.
        await by_name.pop("b").aclose()
        peers["b"] = await spawn_peer(nursery, tmp_path, "b", pg_url)
        by_name["b"] = httpx.AsyncClient(base_url=peers["b"].url, timeout=30)
        await everywhere(by_name, sees_victim, timeout=20)
        after = (await by_name["c"].get(f"/workers/{victim}")).json()
        assert after["created_at"] == before["created_at"]
        assert after["registered_at"] > before["registered_at"]
    finally:
        await close_all(by_name)


async def test_a_second_process_claiming_a_live_worker_id_exits_2_and_the_first_keeps_it(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, names=("a",))
    by_name = clients(peers)
    worker = worker_of("a")
    try:
        before = (await by_name["a"].get(f"/workers/{worker}")).json()
        config = tmp_path / "twin.toml"
        config.write_text(f'[[workers]]\nid = "{worker}"\n')
        twin = await spawn_server(nursery, tmp_path / "twin", "--config", str(config),
                                  env={"AMP_STORE_URL": pg_url}, wait_ready=False)
        assert await twin.wait(60) == 2
        out = twin.output.decode(errors="replace")
        assert [line for line in out.splitlines() if line.startswith("amp-runtime:")] == [
            f"amp-runtime: worker id {worker} is already claimed by another live process on this store"], out
        after = (await by_name["a"].get(f"/workers/{worker}")).json()
        assert after["registered_at"] == before["registered_at"]  # the twin never registered it
        assert worker in await worker_ids(by_name["a"])
    finally:
        await close_all(by_name)


async def start_round_robin(nursery, client: httpx.AsyncClient, backends: dict[str, str],
                            routed: list[tuple[str, str]]) -> str:
    """A load balancer on 127.0.0.1:0 sending each request through `client` to the next backend in
    turn; appends (path, backend name) to `routed`. Returns its URL."""
    turns = itertools.cycle(backends.items())

    async def forward(scope, body: bytes):
        name, url = next(turns)
        routed.append((scope["path"], name))
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.decode("latin-1").lower() not in HOP_HEADERS]
        query = scope["query_string"].decode()
        answer = await client.request(scope["method"], url + scope["path"] + (f"?{query}" if query else ""),
                                      headers=headers, content=body)
        return answer.status_code, [(k.encode(), v.encode()) for k, v in answer.headers.items()
                                    if k.lower() not in HOP_HEADERS], answer.content

    return await serve_http(nursery, forward)


async def test_the_clearml_client_behind_a_load_balancer_over_two_peers(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, names=("a", "b"))
    routed: list[tuple[str, str]] = []
    async with httpx.AsyncClient(timeout=30) as forward:
        balancer = await start_round_robin(nursery, forward, {name: peer.url for name, peer in peers.items()}, routed)
        await run_clearml_client(balancer)
    served = {path.rsplit("/", 1)[-1]: name for path, name in routed}  # the last call of each kind
    assert served["workers.register"] != served["workers.status_report"], routed
