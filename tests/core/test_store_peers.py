"""Peers on one PostgreSQL database: two Stores racing the same logical insert, exactly one wins."""

from datetime import datetime

import pytest
import trio

from amp_runtime.durable import store as durable_sql
from amp_runtime.registry import store as registry_sql
from amp_runtime.registry.models import WorkerInfo, WorkerRecord

from ..pg import peer_stores

ROUNDS = 5


@pytest.fixture
async def two_peers(nursery, tmp_path, pg_url):
    """Two Stores (two connections, two threads) on one database, as two processes would have."""
    async with peer_stores(nursery, pg_url) as stores:
        yield stores


async def race(stores, fn, *args_per_store) -> list:
    """Run `fn` on each store at the same moment; the results in store order."""
    results: list = [None] * len(stores)

    async def one(i):
        results[i] = await stores[i].write(fn, *args_per_store[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(stores)):
            nursery.start_soon(one, i)
    return results


def _worker_row(name: str) -> durable_sql.WorkerRow:
    return durable_sql.WorkerRow(f"t.{name}", "t", name, 1, [], {}, "Idle", 0, b"{}")


async def test_one_of_two_peers_creating_the_same_durable_worker_wins(two_peers):
    for n in range(ROUNDS):
        row = _worker_row(f"w{n}")
        results = await race(two_peers, durable_sql.create_worker, (row, 100), (row, 100))
        assert sorted(results) == ["exists", "ok"]
    rows = await two_peers[0].execute("SELECT count(*), count(DISTINCT worker) FROM durable_workers")
    assert rows == [(ROUNDS, ROUNDS)]
    oplog = await two_peers[1].execute("SELECT count(*) FROM durable_oplog WHERE kind = 'create'")
    assert oplog == [(ROUNDS,)]


async def test_peers_creating_different_workers_respect_max_workers_together(two_peers):
    results = await race(two_peers, durable_sql.create_worker, (_worker_row("a"), 1), (_worker_row("b"), 1))
    assert sorted(results) == ["full", "ok"]


async def test_one_secret_is_kept_when_peers_generate_theirs_at_once(two_peers):
    results = await race(two_peers, registry_sql.set_secret_once, ("jwt", "from-a"), ("jwt", "from-b"))
    assert results[0] == results[1] in ("from-a", "from-b")
    assert await two_peers[0].execute("SELECT count(*) FROM registry_secrets") == [(1,)]


async def test_peers_starting_with_the_same_template_agree_on_its_version(two_peers):
    for n in range(ROUNDS):
        results = await race(two_peers, durable_sql.sync_template_version,
                             (f"t{n}", "T", "hash-1"), (f"t{n}", "T", "hash-1"))
        assert results == [1, 1]
    changed = await race(two_peers, durable_sql.sync_template_version, ("t0", "T", "hash-2"), ("t0", "T", "hash-2"))
    assert changed == [2, 2]


def _record(worker: str, version: int, task: str) -> tuple:
    at = datetime(2026, 12, 1, 12, 0, 0)
    return registry_sql.record_row(WorkerRecord(
        id=worker, version=version, created_at=at, registered_at=at, heartbeat_at=at, last_report_at=None,
        registered=True, timeout_s=60, info=WorkerInfo(), ip=None, tags=["x"], system_tags=[], queues=[],
        task=task, queue=None,
    ))


async def test_peers_saving_the_same_worker_keep_one_row_the_newest(two_peers):
    for n in range(ROUNDS):
        older, newer = _record("shared", 10 * n + 1, f"old{n}"), _record("shared", 10 * n + 2, f"new{n}")
        await race(two_peers, registry_sql.save_workers, ([newer],), ([older],))
        rows = await two_peers[0].execute("SELECT version, task FROM registry_workers WHERE id = 'shared'")
        assert rows == [(10 * n + 2, f"new{n}")]


async def test_an_invocation_key_added_twice_is_kept_once(two_peers):
    await race(two_peers, durable_sql.add_key, ("t.w", "k1"), ("t.w", "k1"))
    assert await two_peers[0].execute("SELECT count(*) FROM durable_keys") == [(1,)]


async def test_two_servers_on_one_database_racing_a_create_answer_200_and_409(nursery, tmp_path, pg_url):
    from ..durable.util import COUNTER, create
    from ..helpers import start_server

    servers = [
        await start_server(nursery, tmp_path / f"d{n}", store={"url": pg_url}, workers=[{"id": f"peer-{n}"}])
        for n in range(2)
    ]
    for round_ in range(ROUNDS):
        statuses: list[int] = []

        async def one(server):
            statuses.append((await create(server.client, COUNTER, f"same{round_}")).status_code)

        async with trio.open_nursery() as race_nursery:
            for server in servers:
                race_nursery.start_soon(one, server)
        assert sorted(statuses) == [200, 409]
    for server in servers:
        await server.client.aclose()
        await server.stop()


async def test_a_later_change_through_another_peer_is_saved_whatever_each_peer_did_before(nursery, tmp_path, pg_url):
    from ..helpers import start_server

    busy, quiet = [
        await start_server(nursery, tmp_path / f"d{n}", store={"url": pg_url}, workers=[{"id": f"peer-{n}"}],
                           registry={"heartbeat_s": 3600})
        for n in range(2)
    ]
    for n in range(30):  # the busy peer has made many more changes than the quiet one
        assert (await busy.client.post("/workers.status_report", json={"worker": "other", "timestamp": n})).status_code == 200
    r = await busy.client.post("/workers.register", json={"worker": "agent", "tags": ["first"]})
    assert r.status_code == 200, r.text
    r = await quiet.client.post("/workers.status_report", json={"worker": "agent", "timestamp": 1, "tags": ["later"]})
    assert r.status_code == 200, r.text
    rows = await quiet.runtime.store.execute("SELECT tags FROM registry_workers WHERE id = 'agent'")
    assert [list(tags) for (tags,) in rows] == [["later"]]
    for server in (busy, quiet):
        await server.client.aclose()
        await server.stop()
