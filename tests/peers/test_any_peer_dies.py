"""Three peers on one PostgreSQL store; kill -9 of any one of them (the first started included).

The other two keep answering all four families: tasks run on them and never on the dead peer;
its job finishes on exactly one survivor with exactly one row per block; its durable instance
answers on a survivor with its state, and a retried invocation key still ran once; its worker
expires from the registry. Restarted with the same config and data dir, it rejoins under the
same worker id and takes tasks and jobs again.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import trio

from ..cluster.clusterutil import routes_to
from ..durable.util import COUNTER, call, create, new_key, oplog, worker_path
from ..helpers import wait_until
from ..jobs.jobutil import wait_for_files, wait_for_status
from ..registry.util import worker_ids
from .peerutil import (NAMES, clients, close_all, create_job, everywhere, lease_owner, log_of,
                       rows_are_one_per_block, spawn_peer, start_peers, worker_of)

LAST_BLOCK = 3999  # long enough to be still running when its peer is killed


async def add(client, n: int, key: str | None = None) -> list:
    response = await call(client, COUNTER, "tally", "add", [n], key=key)
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def sync_tasks(client, count: int) -> list[str]:
    """`count` concurrent sync tasks through `client`; the URL of the peer each one ran on."""
    where = []

    async def send():
        response = await client.post("/task", json={"function": "sleep", "contract": 1, "input": {"ms": 100}})
        assert response.status_code == 200 and response.json()["result"] == {"slept_ms": 100}, response.text
        where.append(response.headers.get("x-amp-node", str(client.base_url).rstrip("/")))

    async with trio.open_nursery() as senders:
        for _ in range(count):
            senders.start_soon(send)
    return where


async def named_task_runs_on(client, worker: str) -> str:
    response = await client.post("/task", json={"function": "hello", "contract": 1, "input": {"name": "peer"},
                                                "worker": worker})
    assert response.status_code == 200 and response.json()["result"] == "Hello, peer!", response.text
    return response.headers.get("x-amp-node", "here")


def all_route_to_all(peers) -> bool:
    return all(routes_to(peer, [other for other in peers.values() if other is not peer]) for peer in peers.values())


@pytest.mark.parametrize("victim", NAMES, ids=["first-started", "second-started", "last-started"])
async def test_kill9_of_any_peer_the_others_keep_every_family_and_it_rejoins_under_its_worker_id(
        nursery, tmp_path, pg_url, victim):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    one, other = survivors = [name for name in NAMES if name != victim]
    dead = worker_of(victim)
    dead_url = peers[victim].url
    try:
        # Before: tasks reach every peer, the victim holds a durable instance and runs a job.
        await wait_until(lambda: all_route_to_all(peers), timeout=30, interval=0.05)
        assert await named_task_runs_on(by_name[one], dead) == dead_url
        assert (await create(by_name[victim], COUNTER, "tally")).status_code == 200
        assert lease_owner(pg_url, "tally") == f"peer:{dead}"
        key = await new_key(by_name[one], COUNTER, "tally")
        assert await add(by_name[one], 2, key=key) == [2]  # relayed to the victim, which runs it

        async def lists_dead(client):
            return dead in await worker_ids(client)

        await everywhere(by_name, lists_dead, timeout=20)
        before = (await by_name[other].get(f"/workers/{dead}")).json()
        unused = await new_key(by_name[other], COUNTER, "tally")  # issued by the victim, first used after its death
        # Last before the kill, so that the job is still running then.
        job = await create_job(by_name[one], dead, LAST_BLOCK)
        await wait_for_files(by_name[other], job["id"], 5, timeout=30)

        peers[victim].kill9()
        await peers[victim].wait()
        await by_name.pop(victim).aclose()
        alive = {name: by_name[name] for name in survivors}

        # Tasks: sync tasks through either survivor all run, never on the dead peer.
        for name in survivors:
            where = await sync_tasks(alive[name], 8)
            assert dead_url not in where and set(where) <= {peers[name].url for name in survivors}, where

        # Registry: the victim's worker leaves the live list at both survivors; its heartbeat stops.
        async def dropped_dead(client):
            return dead not in await worker_ids(client)

        await everywhere(alive, dropped_dead, timeout=30)
        for client in alive.values():
            beats = {w["node_id"]: datetime.fromisoformat(w["heartbeat_at"])
                     for w in (await client.get("/workers")).json()["workers"]}
            # Still known, but its heartbeat stopped at the kill while the survivors' go on.
            assert beats[dead] < min(beats[worker_of(one)], beats[worker_of(other)]), beats
            assert set(await worker_ids(client)) >= {worker_of(one), worker_of(other)}

        # Durable: the key retried through both survivors is answered from its record (add ran
        # once); a new call works on the victim's state; a survivor holds the lease now.
        async with trio.open_nursery() as retries:
            results = []

            async def retry(name):
                results.append(await add(alive[name], 2, key=key))

            for name in survivors:
                retries.start_soon(retry, name)
        assert results == [[2], [2]]
        assert await add(alive[other], 3) == [5]
        assert await add(alive[one], 1, key=unused) == [6]
        assert await add(alive[other], 1, key=unused) == [6]
        assert lease_owner(pg_url, "tally") in {f"peer:{worker_of(name)}" for name in survivors}
        kinds = [entry["kind"] for entry in await oplog(alive[one], COUNTER, "tally")]
        assert kinds.count("invoke") == kinds.count("done") == 3, kinds
        metas = [(await client.get(worker_path(COUNTER, "tally"))).json() for client in alive.values()]
        assert metas[0] == metas[1] and metas[0]["status"] == "Idle"

        # Jobs: both survivors list it; exactly one took it over; it completes with one row per block.
        for client in alive.values():
            listed = (await client.get("/jobs", params={"status": "all"})).json()["jobs"]
            assert job["id"] in [j["id"] for j in listed]
        done = await wait_for_status(alive[one], job["id"], "Completed", timeout=60)
        takers = [name for name in survivors if f"job {job['id']} moved from {dead}" in log_of(peers[name])]
        assert len(takers) == 1, {name: log_of(peers[name])[-3000:] for name in survivors}
        assert done["node_id"] == worker_of(takers[0])
        rows_are_one_per_block(tmp_path / "shared", LAST_BLOCK)
        assert (await alive[other].get(f"/jobs/{job['id']}")).json() == done

        # Restarted with the same config and data dir: its worker id is live again everywhere,
        # tasks naming it run there, and it answers the jobs and durable families.
        peers[victim] = await spawn_peer(nursery, tmp_path, victim, pg_url)
        by_name = {**alive, victim: clients({victim: peers[victim]})[victim]}
        await everywhere(by_name, lists_dead, timeout=30)
        after = (await by_name[one].get(f"/workers/{dead}")).json()
        assert after["created_at"] == before["created_at"] and after["registered_at"] > before["registered_at"]
        await wait_until(lambda: all_route_to_all(peers), timeout=30, interval=0.05)
        for name in survivors:
            assert await named_task_runs_on(by_name[name], dead) == peers[victim].url
        assert (await by_name[victim].get(f"/jobs/{job['id']}")).json() == done
        assert await add(by_name[victim], 2, key=key) == [2]  # still the recorded result
        assert await add(by_name[victim], 1) == [7]
        again = await create_job(by_name[one], dead, 99)
        finished = await wait_for_status(by_name[other], again["id"], "Completed", timeout=30)
        assert finished["node_id"] == dead
    finally:
        await close_all(by_name)
