"""Durable workers on three peers over one PostgreSQL store (real processes).

An instance runs on the peer holding its lease (the creating one); a call through any other
peer is relayed there; when the owner dies (kill -9) a survivor takes the lease once it expires
and rebuilds the instance from the store, so a retried invocation key still ran once; a peer
draining on SIGTERM gives its leases up and another peer answers at once.
"""

from __future__ import annotations

import signal

import pytest
import trio

from ..durable.util import APPROVAL, COUNTER, call, create, new_key, oplog, promise_ids, worker_path
from ..helpers import wait_until
from .peerutil import NAMES, clients, lease_owner, start_peers


async def add(client, name: str, n: int, key: str | None = None) -> list:
    response = await call(client, COUNTER, name, "add", [n], key=key)
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def oplog_kinds(client, name: str) -> list[str]:
    response = await client.get(worker_path(COUNTER, name) + "/oplog")
    assert response.status_code == 200, response.text
    return [entry["kind"] for entry in response.json()["entries"]]


async def test_calls_through_any_peer_run_on_the_owner_and_a_key_runs_once(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    try:
        assert (await create(by_name["a"], COUNTER, "c", args=["x"])).status_code == 200
        assert lease_owner(pg_url, "c") == "peer:a-w1"
        # Through b: relayed to a, which runs it; a retried key is answered from its record.
        key = await new_key(by_name["b"], COUNTER, "c")
        assert await add(by_name["b"], "c", 2, key=key) == [2]
        assert await add(by_name["b"], "c", 2, key=key) == [2]
        assert await add(by_name["c"], "c", 2, key=key) == [2]
        assert await add(by_name["a"], "c", 5) == [7]  # the owner sees what b did: one state
        assert lease_owner(pg_url, "c") == "peer:a-w1"  # nothing moved
        assert (await oplog_kinds(by_name["c"], "c")).count("done") == 2
        # Every peer answers the metadata, the same.
        metas = [(await client.get(worker_path(COUNTER, "c"))).json() for client in by_name.values()]
        assert metas[0]["args"] == ["x"] and metas[0]["status"] == "Idle"
        assert metas[0] == metas[1] == metas[2]
        parsed = (await by_name["b"].get(f"/v1/templates/workers/{COUNTER}.c")).json()
        assert parsed["workerId"] == {"rawTemplateId": COUNTER, "workerName": "c"}
        # A name is taken cluster-wide; an unknown worker is 404 on every peer.
        assert (await create(by_name["c"], COUNTER, "c")).status_code == 409
        assert (await by_name["b"].get(worker_path(COUNTER, "nope"))).status_code == 404
        # Deleted through c: gone everywhere.
        assert (await by_name["c"].delete(worker_path(COUNTER, "c"))).status_code == 200
        for client in by_name.values():
            assert (await client.get(worker_path(COUNTER, "c"))).status_code == 404
        assert lease_owner(pg_url, "c") is None
    finally:
        for client in by_name.values():
            await client.aclose()


@pytest.mark.parametrize("victim", ["a", "b"], ids=["first-started", "second-started"])
async def test_kill9_of_the_owner_a_survivor_takes_the_instance_over_with_its_keys(nursery, tmp_path, pg_url, victim):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    one, other = [name for name in NAMES if name != victim]
    try:
        assert (await create(by_name[victim], COUNTER, "c")).status_code == 200
        key = await new_key(by_name[one], COUNTER, "c")
        assert await add(by_name[one], "c", 2, key=key) == [2]
        unused = await new_key(by_name[other], COUNTER, "c")  # issued by the victim, used after its death
        # Queued on the victim without waiting: it must run on whoever takes over.
        queued = await by_name[one].post(worker_path(COUNTER, "c") + "/invoke", params={"function": "add"},
                                         json={"params": [0]})
        assert queued.status_code == 200
        peers[victim].kill9()
        await peers[victim].wait()
        # The key retried through both survivors at once: the victim's lease expires, exactly one
        # survivor takes the instance over, and add still ran once.
        results = []

        async def retry(name):
            results.append(await add(by_name[name], "c", 2, key=key))

        async with trio.open_nursery() as retries:
            for name in (one, other, one, other):
                retries.start_soon(retry, name)
        assert results == [[2]] * 4
        assert lease_owner(pg_url, "c") in (f"peer:{one}-w1", f"peer:{other}-w1")
        assert await add(by_name[one], "c", 3) == [5]  # a new call works on the victim's state
        assert await add(by_name[other], "c", 1, key=unused) == [6]
        kinds = await oplog_kinds(by_name[one], "c")
        assert kinds.count("invoke") == kinds.count("done") == 4  # the key's call once, the queued one, 3 and 1
        metas = [(await by_name[name].get(worker_path(COUNTER, "c"))).json() for name in (one, other)]
        assert metas[0] == metas[1] and metas[0]["status"] == "Idle"
    finally:
        for client in by_name.values():
            await client.aclose()


async def test_sigterm_of_the_owner_hands_its_instance_over_at_once(nursery, tmp_path, pg_url):
    # Leases that would take a minute to expire: only the release lets b answer within seconds.
    peers = await start_peers(nursery, tmp_path, pg_url, AMP_REGISTRY_LIVENESS_S="60")
    by_name = clients(peers)
    try:
        assert (await create(by_name["a"], COUNTER, "c")).status_code == 200
        key = await new_key(by_name["b"], COUNTER, "c")
        assert await add(by_name["b"], "c", 4, key=key) == [4]
        # An approval suspended on a, its caller waiting through b.
        assert (await create(by_name["a"], APPROVAL, "ap")).status_code == 200
        approval_key = await new_key(by_name["b"], APPROVAL, "ap")
        waiting = []

        async def waiting_caller():
            waiting.append(await call(by_name["b"], APPROVAL, "ap", "request", ["ship?"], key=approval_key))

        nursery.start_soon(waiting_caller)

        async def suspended(client):
            return (await client.get(worker_path(APPROVAL, "ap"))).json()["status"] == "Suspended"

        await wait_until(lambda: suspended(by_name["c"]), timeout=20, interval=0.1)
        (promise,) = await promise_ids(by_name["c"], APPROVAL, "ap")
        peers["a"].send_signal(signal.SIGTERM)
        assert await peers["a"].wait() == 0
        assert waiting[0].status_code == 503  # told at once to retry: the worker moves
        with trio.fail_after(15):
            assert await add(by_name["b"], "c", 4, key=key) == [4]
            assert await add(by_name["b"], "c", 1) == [5]
            # The approval re-runs on its new owner and finds its promise; the retried key gets the result.
            await wait_until(lambda: suspended(by_name["b"]), timeout=15, interval=0.1)
            async with trio.open_nursery() as callers:
                callers.start_soon(waiting_caller)
                completed = await by_name["c"].post(worker_path(APPROVAL, "ap") + "/complete",
                                                    json={"oplogIdx": promise, "data": [7]})
                assert completed.json() is True
        assert waiting[1].json() == {"result": [[7]]}
        assert lease_owner(pg_url, "c") in ("peer:b-w1", "peer:c-w1")
        assert "released 2 instance(s)" in peers["a"].output.decode(errors="replace")
    finally:
        for client in by_name.values():
            await client.aclose()


async def test_a_peer_that_lost_the_lease_writes_nothing_more(nursery, tmp_path, pg_url):
    # Renewals far apart: a finds out from its next write, not from its lease loop.
    peers = await start_peers(nursery, tmp_path, pg_url, AMP_REGISTRY_HEARTBEAT_S="30", AMP_REGISTRY_LIVENESS_S="120")
    by_name = clients(peers)
    try:
        assert (await create(by_name["a"], COUNTER, "c")).status_code == 200
        assert await add(by_name["a"], "c", 1) == [1]
        # As if a had been cut off long enough for b to take the lease (a partition, a long pause).
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE durable_leases SET owner = 'peer:b-w1', owner_url = %s", [peers["b"].url])
        fenced = await by_name["a"].post(worker_path(COUNTER, "c") + "/invoke", params={"function": "add"},
                                         json={"params": [100]})
        assert fenced.status_code == 503, fenced.text  # a's instance found out and stopped: nothing written
        key = await new_key(by_name["a"], COUNTER, "c")  # relayed to b, which runs the worker now
        assert await add(by_name["a"], "c", 2, key=key) == [3]  # relayed to b now
        assert await add(by_name["c"], "c", 2, key=key) == [3]
        kinds = await oplog_kinds(by_name["a"], "c")
        assert kinds.count("invoke") == kinds.count("done") == 2
        assert lease_owner(pg_url, "c") == "peer:b-w1"
    finally:
        for client in by_name.values():
            await client.aclose()


async def test_a_dead_peers_suspended_invocation_moves_unasked_and_finishes_elsewhere(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url)
    by_name = clients(peers)
    try:
        assert (await create(by_name["a"], APPROVAL, "ap")).status_code == 200
        queued = await by_name["b"].post(worker_path(APPROVAL, "ap") + "/invoke", params={"function": "request"},
                                         json={"params": ["ship?"]})
        assert queued.status_code == 200

        async def suspended(client):
            return (await client.get(worker_path(APPROVAL, "ap"))).json()["status"] == "Suspended"

        await wait_until(lambda: suspended(by_name["c"]), timeout=20, interval=0.1)
        (promise,) = await promise_ids(by_name["c"], APPROVAL, "ap")
        peers["a"].kill9()
        await peers["a"].wait()

        # Nobody calls: a survivor's lease renewal takes the instance once a's lease expires,
        # and the unfinished invocation runs again there, finding its promise.
        def moved():
            return lease_owner(pg_url, "ap", APPROVAL) in ("peer:b-w1", "peer:c-w1")

        await wait_until(moved, timeout=30, interval=0.1)
        await wait_until(lambda: suspended(by_name["b"]), timeout=20, interval=0.1)
        assert await promise_ids(by_name["b"], APPROVAL, "ap") == [promise]
        completed = await by_name["c"].post(worker_path(APPROVAL, "ap") + "/complete",
                                            json={"oplogIdx": promise, "data": [4, 2]})
        assert completed.status_code == 200 and completed.json() is True
        kinds = []

        async def one_done():
            kinds[:] = [e["kind"] for e in await oplog(by_name["b"], APPROVAL, "ap")]
            return kinds.count("done") == 1

        await wait_until(one_done, timeout=20, interval=0.1)
        assert kinds.count("invoke") == 1
    finally:
        for client in by_name.values():
            await client.aclose()
