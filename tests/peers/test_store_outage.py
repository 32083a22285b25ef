"""Peers outlive the store: PostgreSQL stopped for longer than the old `[store] reconnect_s` bound
with requests on every family meanwhile. Every request that needs the store answers 503
`STORE_UNAVAILABLE` with Retry-After within 2 s, `/ready` says why, no peer exits, nothing answered
503 takes effect once the server is back, and everything answers normally after."""

from __future__ import annotations

import re

import httpx
import trio

from ..durable.util import COUNTER, create, worker_path
from ..helpers import wait_until
from ..jobs.jobutil import wait_for_files, wait_for_status
from .peerutil import DATASET, clients, close_all, log_of, rows_are_one_per_block, start_peers, worker_of

OUTAGE_S = 10.0  # longer than a test config's reconnect bound used to be; every round of requests runs in it
ANSWER_WITHIN_S = 2.0
NAMES = ("a", "b")


def _requests(round_no: int, name: str) -> list[tuple[str, str, str, dict | None]]:
    """(what, method, path, JSON body) for one request on each family that needs the store."""
    tag = f"outage-{name}-{round_no}"
    return [
        ("create job", "POST", "/jobs", {"dataset": DATASET, "start_block": 0, "end_block": 5}),
        ("list jobs", "GET", "/jobs", None),
        ("list workers", "GET", "/workers", None),
        ("register worker", "POST", "/workers.register", {"worker": tag}),
        ("create durable", "POST", f"/v1/templates/{COUNTER}/workers", {"name": tag}),
        ("webhook task", "POST", "/task", {"function": "echo", "input": tag, "contract": 1, "mode": "webhook",
                                          "webhook": {"url": "http://127.0.0.1:9/hook"}}),
        ("metrics", "GET", "/metrics", None),
    ]


async def _answered_503_in_time(client: httpx.AsyncClient, what: str, method: str, path: str, body) -> None:
    started = trio.current_time()
    response = await client.request(method, path, json=body, timeout=ANSWER_WITHIN_S + 3)
    took = trio.current_time() - started
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert took <= ANSWER_WITHIN_S, (what, took)
    assert response.headers.get("Retry-After"), (what, response.headers)
    assert "STORE_UNAVAILABLE" in response.text or "store is unavailable" in response.text, (what, response.text)


async def _ready(client: httpx.AsyncClient) -> int:
    return (await client.get("/ready", timeout=ANSWER_WITHIN_S + 3)).status_code


async def test_peers_answer_503_through_a_long_postgresql_outage_and_serve_again_after(
        nursery, tmp_path, own_pg_server):
    url = own_pg_server.create_database()
    peers = await start_peers(nursery, tmp_path, url, names=NAMES, AMP_WEBHOOK_ALLOW_PRIVATE="true",
                              AMP_JOBS_CONTINUOUS_BLOCKS_PER_S="200",
                              # Peer rows expire after 4 x liveness: shorter than the outage.
                              AMP_REGISTRY_LIVENESS_S="2.0")
    by_name = clients(peers)
    try:
        for client in by_name.values():
            assert (await create(client, COUNTER, f"before-{id(client)}")).status_code == 200
        # A continuous job running on a's worker: it must wait out the outage, losing nothing.
        job = await _created_job(by_name["b"], {"dataset": DATASET, "start_block": 0, "node_id": worker_of("a")})
        before = await wait_for_files(by_name["a"], job["id"], 3, timeout=30)

        await trio.to_thread.run_sync(own_pg_server.halt)
        outage_ends = trio.current_time() + OUTAGE_S
        rounds = 0
        while trio.current_time() < outage_ends:
            for name, client in by_name.items():
                for what, method, path, body in _requests(rounds, name):
                    await _answered_503_in_time(client, what, method, path, body)
                # Work that does not need the store keeps running.
                sync = await client.post("/task", json={"function": "echo", "input": rounds, "contract": 1})
                assert sync.status_code == 200 and sync.json()["result"] == rounds, sync.text
                health = await client.get("/health")
                assert health.status_code == 200 and health.json()["store"]["state"] == "unavailable", health.text
                ready = await client.get("/ready")
                assert ready.status_code == 503 and "store" in ready.json()["reason"], ready.text
            rounds += 1
        for peer in peers.values():
            assert peer.proc.returncode is None, log_of(peer)[-3000:]

        await trio.to_thread.run_sync(own_pg_server.resume)
        for client in by_name.values():
            await wait_until(lambda: _ready_is(client, 200), timeout=30, interval=0.1)
            assert (await client.get("/health")).json()["store"] == {"state": "available"}

        for name, client in by_name.items():
            # Nothing answered 503 took effect: no durable worker, registered worker or job of the outage.
            for n in range(rounds):
                tag = f"outage-{name}-{n}"
                assert (await client.get(worker_path(COUNTER, tag))).status_code == 404, tag
                assert (await client.get(f"/workers/{tag}")).status_code == 404, tag
            jobs = await client.get("/jobs")
            assert jobs.status_code == 200 and [j["id"] for j in jobs.json()["jobs"]] == [job["id"]], jobs.text
        # And everything answers normally again.
        for name, client in by_name.items():
            assert (await create(client, COUNTER, f"after-{name}")).status_code == 200
            registered = await client.post("/workers.register", json={"worker": f"after-{name}"})
            assert registered.status_code == 200, registered.text
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/workers")).status_code == 200
        # The job went on from where it was, and stops cleanly with one row per block.
        files_before = min(t["files_count"] for t in before["tables"].values())
        await wait_for_files(by_name["b"], job["id"], files_before + 3, timeout=30)
        assert (await by_name["b"].put(f"/jobs/{job['id']}/stop")).status_code == 200
        stopped = await wait_for_status(by_name["b"], job["id"], "Stopped", timeout=30)
        assert stopped.get("error") is None, stopped
        progress = (await by_name["b"].get(f"/jobs/{job['id']}/progress")).json()
        rows_are_one_per_block(tmp_path / "shared", progress["tables"]["blocks"]["current_block"])
        assert f"job {job['id']} waits for the store" in log_of(peers["a"])
        assert f"job {job['id']} goes on" in log_of(peers["a"])
        await _created_job(by_name["a"], {"dataset": DATASET, "start_block": 10_000_000, "end_block": 10_000_005})
    finally:
        await close_all(by_name)

    for peer in peers.values():
        assert peer.proc.returncode is None, log_of(peer)[-3000:]
        out = log_of(peer)
        assert "Traceback" not in out, out[-4000:]
        # One WARNING when the store went, one when it came back; the rest waited quietly.
        warnings = [line for line in out.splitlines() if " WARNING " in line]
        assert len([w for w in warnings if re.search(r"amp_runtime.store: store .* unavailable", w)]) == 1, warnings
        assert len([w for w in warnings if "available again" in w]) == 1, warnings
        assert len(warnings) <= 3, "\n".join(warnings)
        assert "left routing" not in out, out[-4000:]  # neither "it drained" nor "silent": the outage was everyone's


async def _ready_is(client: httpx.AsyncClient, status: int) -> bool:
    try:
        return await _ready(client) == status
    except httpx.TimeoutException:
        return False


async def _created_job(client: httpx.AsyncClient, body: dict) -> dict:
    """POST /jobs, once the named worker's heartbeat is in the shared registry."""
    created = {}

    async def accepted():
        response = await client.post("/jobs", json=body)
        if response.status_code == 400 and response.json()["error_code"] == "INVALID_NODE_ID":
            return False
        assert response.status_code == 201, response.text
        created["job"] = response.json()
        return True

    await wait_until(accepted, timeout=20, interval=0.1)
    return created["job"]
