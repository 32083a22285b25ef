"""Jobs on three peers over one PostgreSQL store (real processes, one shared output dir).

Any peer creates, lists and stops any job; a job runs on the peer owning its worker; when that
peer dies (kill -9) exactly one survivor takes the job over once the worker's heartbeat expires
and it completes with exactly one row per block; a peer draining on SIGTERM hands its job over
at once.
"""

from __future__ import annotations

import signal

import httpx
import pytest
import trio

from ..helpers import wait_until
from ..jobs.jobutil import wait_for_files, wait_for_status
from .peerutil import (DATASET, NAMES, clients, close_all, create_job, log_of, rows_are_one_per_block, spawn_peer,
                       start_peers, worker_of)


async def test_any_peer_creates_lists_and_stops_jobs_that_run_on_their_workers_peer(nursery, tmp_path, pg_url):
    # The table is polled only every 30 s here: the peers act this soon because NOTIFY wakes them.
    peers = await start_peers(nursery, tmp_path, pg_url, AMP_JOBS_WORKER_CHECK_S="30")
    by_name = clients(peers)
    try:
        # Created on a, for b's worker: it runs on b (the only process holding that worker).
        finite = await create_job(by_name["a"], worker_of("b"), 999)
        done = await wait_for_status(by_name["c"], finite["id"], "Completed", timeout=20)
        assert done["node_id"] == worker_of("b")
        rows_are_one_per_block(tmp_path / "shared", 999)

        # A long job created on b for c's worker, stopped through a: c winds it down.
        long = await create_job(by_name["b"], worker_of("c"), 10**9)
        await wait_for_files(by_name["a"], long["id"], 2, timeout=30)
        stopped = (await by_name["a"].put(f"/jobs/{long['id']}/stop")).json()
        assert stopped["status"] in ("StopRequested", "Stopping", "Stopped")
        final = await wait_for_status(by_name["b"], long["id"], "Stopped", timeout=20)
        assert final["node_id"] == worker_of("c")

        # Every peer lists the same jobs from the shared table.
        listings = [(await client.get("/jobs", params={"status": "all"})).json()["jobs"] for client in by_name.values()]
        assert [job["id"] for job in listings[0]] == [long["id"], finite["id"]]
        assert listings[0] == listings[1] == listings[2]
    finally:
        await close_all(by_name)


@pytest.mark.parametrize("victim", ["a", "b"], ids=["first-started", "second-started"])
async def test_kill9_of_the_peer_running_a_job_one_survivor_takes_it_over(nursery, tmp_path, pg_url, victim):
    last_block = 3999
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    survivors = [name for name in NAMES if name != victim]
    try:
        job = await create_job(by_name[survivors[0]], worker_of(victim), last_block)
        await wait_for_files(by_name[survivors[1]], job["id"], 5, timeout=30)
        peers[victim].kill9()
        await peers[victim].wait()

        moved = await wait_for_status(by_name[survivors[0]], job["id"], "Completed", timeout=50)
        assert moved["node_id"] in {worker_of(name) for name in survivors}
        takers = [name for name in survivors if f"job {job['id']} moved from {worker_of(victim)}" in log_of(peers[name])]
        assert len(takers) == 1, {name: log_of(peers[name])[-3000:] for name in survivors}
        assert moved["node_id"] == worker_of(takers[0])
        rows_are_one_per_block(tmp_path / "shared", last_block)
        for client in (by_name[name] for name in survivors):  # both still answer, with the same view
            assert (await client.get(f"/jobs/{job['id']}")).json() == moved

        # Restarted under the same worker id, it runs the jobs assigned to that worker again.
        peers[victim] = await spawn_peer(nursery, tmp_path, victim, pg_url)
        again = await create_job(by_name[survivors[1]], worker_of(victim), 99)
        assert (await wait_for_status(by_name[survivors[0]], again["id"], "Completed"))["node_id"] == worker_of(victim)
    finally:
        await close_all(by_name)


async def test_sigterm_hands_the_job_over_at_once_while_a_task_still_runs(nursery, tmp_path, pg_url):
    last_block = 3999
    # A long expiry grace: the job can only move this soon if the draining peer hands it over.
    peers = await start_peers(nursery, tmp_path, pg_url, AMP_JOBS_EXPIRY_GRACE_S="60")
    by_name = clients(peers)
    task = {}

    async def long_task() -> None:  # in flight on b through the drain (its grace is 5 s)
        task["response"] = await by_name["b"].post("/task", json={
            "function": "sleep", "contract": 1, "input": {"ms": 3500}, "worker": worker_of("b")})
        task["answered_at"] = trio.current_time()

    try:
        job = await create_job(by_name["a"], worker_of("b"), last_block)
        await wait_for_files(by_name["c"], job["id"], 5, timeout=30)
        async with httpx.AsyncClient(base_url=peers["b"].url, timeout=10) as probe:
            nursery.start_soon(long_task)

            async def task_and_job_running() -> bool:  # the job's runner holds a slot too
                return (await probe.get("/health")).json()["slots"]["busy"] >= 2

            await wait_until(task_and_job_running, timeout=10, interval=0.02)
        peers["b"].send_signal(signal.SIGTERM)

        async def moved():
            return (await by_name["a"].get(f"/jobs/{job['id']}")).json()["node_id"] != worker_of("b")

        await wait_until(moved, timeout=5, interval=0.05)
        assert "response" not in task, "the job was handed over only after the in-flight task ended"
        assert await peers["b"].wait(timeout=15) == 0, log_of(peers["b"])
        assert f"job {job['id']} handed over to" in log_of(peers["b"]), log_of(peers["b"])
        assert task["response"].status_code == 200, task["response"].text
        assert task["response"].json()["result"] == {"slept_ms": 3500}
        done = await wait_for_status(by_name["c"], job["id"], "Completed", timeout=50)
        assert done["node_id"] in (worker_of("a"), worker_of("c"))
        rows_are_one_per_block(tmp_path / "shared", last_block)
    finally:
        await close_all(by_name)


async def test_a_peer_whose_listen_connection_drops_still_hears_of_new_jobs(nursery, tmp_path, pg_url):
    import psycopg

    peers = {name: await spawn_peer(nursery, tmp_path, name, pg_url, AMP_JOBS_WORKER_CHECK_S="30") for name in ("a", "b")}
    by_name = clients(peers)
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'amp-runtime-listen' AND datname = current_database()").fetchall()
        assert len(killed) == 2  # one listener per peer
        await wait_until(lambda: "listen amp_jobs" in log_of(peers["b"]), timeout=10, interval=0.05)
        job = await create_job(by_name["a"], worker_of("b"), 199)
        done = await wait_for_status(by_name["a"], job["id"], "Completed", timeout=20)
        assert done["node_id"] == worker_of("b")
    finally:
        await close_all(by_name)


async def test_concurrent_creates_on_two_peers_make_one_active_job_per_dataset_on_a_peers_worker(
        nursery, tmp_path, pg_url):
    peers = {name: await spawn_peer(nursery, tmp_path, name, pg_url) for name in ("a", "b")}
    by_name = clients(peers)
    try:
        first = await create_job(by_name["a"], worker_of("b"), 0)  # both workers are in the shared registry now
        await wait_for_status(by_name["a"], first["id"], "Completed")
        # A live worker registered through the workers API by an outside agent: no peer runs it.
        assert (await by_name["a"].post("/workers.register", json={"worker": "outside-1"})).status_code == 200
        outside = await by_name["b"].post("/jobs", json={"dataset": DATASET, "node_id": "outside-1"})
        assert outside.status_code == 400 and outside.json()["error_code"] == "INVALID_NODE_ID"

        answers = []
        body = {"dataset": DATASET, "start_block": 10, "end_block": 10**9}

        async def post(client):
            answers.append(await client.post("/jobs", json=body))

        async with trio.open_nursery() as posts:
            for _ in range(4):
                for client in by_name.values():
                    posts.start_soon(post, client)
        assert sorted(r.status_code for r in answers) == [201] + [409] * 7
        (created,) = [r.json() for r in answers if r.status_code == 201]
        assert created["node_id"] in (worker_of("a"), worker_of("b"))
    finally:
        await close_all(by_name)


async def test_a_stop_asked_for_a_dead_peers_job_ends_it_stopped_once_its_worker_expires(nursery, tmp_path, pg_url):
    peers = {name: await spawn_peer(nursery, tmp_path, name, pg_url) for name in ("a", "b")}
    by_name = clients(peers)
    try:
        job = await create_job(by_name["a"], worker_of("b"), 10**9)
        await wait_for_files(by_name["a"], job["id"], 2, timeout=30)
        peers["b"].kill9()
        await peers["b"].wait()
        asked = (await by_name["a"].put(f"/jobs/{job['id']}/stop")).json()
        assert asked["status"] == "StopRequested"  # its owner is gone: nobody winds it down yet
        stopped = await wait_for_status(by_name["a"], job["id"], "Stopped", timeout=20)
        assert stopped["node_id"] == worker_of("a")
    finally:
        await close_all(by_name)
