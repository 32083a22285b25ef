"""The registry SQL on both store backends (`any_store`: DuckDB, then PostgreSQL), and the
PostgreSQL-only statements peers share (`pg_stores`)."""

from datetime import datetime, timedelta

import pytest
import trio

from amp_runtime.jobs import store as jobs_store
from amp_runtime.registry import store as sql
from amp_runtime.registry.actor import Register, Report, Unregister
from amp_runtime.registry.models import WorkerInfo, WorkerRecord

from ..pg import peer_stores

NOW = datetime(2026, 12, 1, 12, 0, 0, 500000)


def record(worker_id: str, version: int, **changes) -> WorkerRecord:
    fields = dict(
        id=worker_id, version=version, created_at=NOW, registered_at=NOW, heartbeat_at=NOW, last_report_at=None,
        registered=True, timeout_s=600, info=WorkerInfo(version="1.2.3"), ip=None, tags=["gpu", "a,b"],
        system_tags=[], queues=["q1"], task=None, queue=None,
    )
    fields.update(changes)
    return WorkerRecord(**fields)


async def test_workers_round_trip_and_a_stale_version_never_wins(any_store):
    w1, w2 = record("w1", 1), record("w2", 2, ip="10.0.0.1", task="t-1", queue="q1", last_report_at=NOW)
    await any_store.write(sql.write_batch, [sql.record_row(w1), sql.record_row(w2)], [], [])
    assert await any_store.read(sql.load_workers) == [w1, w2]
    newer, stale = record("w1", 5, tags=[]), record("w1", 3, registered=False)
    await any_store.write(sql.write_batch, [sql.record_row(newer), sql.record_row(stale)], [], [])
    await any_store.write(sql.write_batch, [sql.record_row(stale)], [], [])  # older than the stored row
    assert await any_store.read(sql.load_workers) == [newer, w2]


async def test_secret_is_set_once(any_store):
    assert await any_store.read(sql.get_secret, "jwt") is None
    assert await any_store.write(sql.set_secret_once, "jwt", "first") == "first"
    assert await any_store.write(sql.set_secret_once, "jwt", "second") == "first"


async def test_stats_and_activity_buckets(any_store):
    stats = [
        ("w1", "cpu", "0", 100.0, 10.0), ("w1", "cpu", "0", 104.0, 30.0), ("w1", "cpu", "1", 101.0, 50.0),
        ("w2", "cpu", "0", 102.0, 70.0), ("w2", "mem", "", 103.0, 1.0), ("w1", "cpu", "0", 120.0, 90.0),
    ]
    activity = [("w1", 100.0, True), ("w2", 101.0, False), ("w1", 121.0, False)]
    await any_store.write(sql.write_batch, [], stats, activity)
    assert await any_store.read(sql.metric_keys, None) == ["cpu", "mem"]
    assert await any_store.read(sql.metric_keys, ["w1"]) == ["cpu"]
    assert await any_store.read(sql.metric_keys, []) == ["cpu", "mem"]  # no filter
    split = await any_store.read(lambda c: sql.stats_buckets(
        c, metrics=["cpu"], from_date=100, to_date=119, interval=10, split_by_variant=True, worker_ids=["w1"]))
    assert [tuple(r) for r in split] == [("w1", "cpu", "0", 100, 20.0, 10.0, 30.0), ("w1", "cpu", "1", 100, 50.0, 50.0, 50.0)]
    merged = await any_store.read(lambda c: sql.stats_buckets(
        c, metrics=["cpu", "mem"], from_date=0, to_date=200, interval=10, split_by_variant=False, worker_ids=None))
    assert [tuple(r) for r in merged] == [
        ("w1", "cpu", "", 100, 30.0, 10.0, 50.0), ("w1", "cpu", "", 120, 90.0, 90.0, 90.0),
        ("w2", "cpu", "", 100, 70.0, 70.0, 70.0), ("w2", "mem", "", 100, 1.0, 1.0, 1.0),
    ]
    buckets = await any_store.read(lambda c: sql.activity_buckets(c, from_date=0, to_date=200, interval=10))
    assert [tuple(r) for r in buckets] == [(100, 2, 1), (120, 1, 0)]
    await any_store.write(sql.delete_stats_before, 110.0)
    assert await any_store.execute("SELECT count(*) FROM registry_stats") == [(1,)]
    assert await any_store.execute("SELECT count(*) FROM registry_activity") == [(1,)]


# -- PostgreSQL shared by peers: changes merged by the database, expiry by compare-and-set ---------

@pytest.fixture
async def pg_stores(nursery, tmp_path, pg_url):
    """Two Stores on one PostgreSQL database, as two peers have."""
    async with peer_stores(nursery, pg_url) as stores:
        yield stores


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


async def change(store, kind: str, msg) -> None:
    """A change at the message's time (peers leave it to the database's clock)."""
    await store.write(sql.write_batch, [], [], [], [sql.change_params(kind, msg, at=getattr(msg, "now", None))])


async def test_a_change_at_one_peer_builds_on_what_another_peer_saved(pg_stores):
    a, b = pg_stores
    await change(a, "register", Register(worker="w", now=at(0), timeout_s=10, ip="10.0.0.1",
                                         info=WorkerInfo(version="9"), tags=["gpu"], queues=["q"]))
    await change(b, "report", Report(worker="w", now=at(5), default_timeout_s=600, ip=None, task="t-1", queue="q"))
    (rec,) = await a.read(sql.load_workers)
    assert (rec.created_at, rec.registered_at, rec.heartbeat_at, rec.last_report_at) == (at(0), at(0), at(5), at(5))
    assert (rec.registered, rec.timeout_s, rec.ip, rec.info.version) == (True, 10, "10.0.0.1", "9")
    assert (rec.tags, rec.queues, rec.task, rec.queue) == (["gpu"], ["q"], "t-1", "q")

    # Past its timeout a report registers it again, with the default timeout; absent task = cleared.
    await change(a, "report", Report(worker="w", now=at(30), default_timeout_s=600, ip=None, tags=[]))
    (rec,) = await b.read(sql.load_workers)
    assert (rec.created_at, rec.registered_at, rec.timeout_s, rec.task, rec.tags) == (at(0), at(30), 600, None, [])

    await change(b, "unregister", Unregister(worker="w"))
    await change(b, "unregister", Unregister(worker="nobody"))
    (rec,) = await a.read(sql.load_workers)
    assert not rec.registered and rec.heartbeat_at == at(30)


async def test_a_report_to_an_unknown_worker_registers_it(pg_stores):
    await change(pg_stores[0], "report", Report(worker="new", now=at(0), default_timeout_s=60, ip=None))
    (rec,) = await pg_stores[1].read(sql.load_workers)
    assert (rec.registered, rec.timeout_s, rec.created_at, rec.last_report_at, rec.info) == (
        True, 60, at(0), at(0), WorkerInfo())


async def test_peers_expiring_at_once_expire_a_silent_worker_once_and_a_fresh_one_never(pg_stores):
    a, b = pg_stores
    for n in range(5):
        silent, fresh = f"silent{n}", f"fresh{n}"
        await change(a, "register", Register(worker=silent, now=at(0), timeout_s=10, ip=None))
        await change(a, "register", Register(worker=fresh, now=at(0), timeout_s=10, ip=None))
        await change(b, "report", Report(worker=fresh, now=at(15), default_timeout_s=600, ip=None))
        expired: list[list[str]] = []

        async def expire(store):
            expired.append(await store.write(sql.expire_workers, at(15)))

        async with trio.open_nursery() as race:
            race.start_soon(expire, a)
            race.start_soon(expire, b)
        assert sorted(expired) == [[], [silent]]
        assert await a.write(sql.expire_workers, at(15)) == []
    registered = {r.id: r.registered for r in await a.read(sql.load_workers)}
    assert all(registered[f"fresh{n}"] and not registered[f"silent{n}"] for n in range(5))


async def test_peers_changes_are_stamped_and_aged_by_the_databases_clock_not_their_own(pg_stores):
    a, b = pg_stores
    wrong = datetime(2000, 1, 1)  # a peer's own clock, far off: never written, never compared
    await a.write(sql.write_batch, [], [], [], [sql.change_params("register", Register(
        worker="w", now=wrong, timeout_s=3, ip=None))])
    await b.write(sql.write_batch, [], [], [], [sql.change_params("report", Report(
        worker="w", now=wrong, default_timeout_s=600, ip=None))])
    await a.write(jobs_store.add_job_workers, ["w"], NOW)
    records, db_now = await b.read(sql.load_workers_and_clock)
    (rec,) = records
    assert timedelta(0) <= db_now - rec.heartbeat_at < timedelta(seconds=3)
    assert rec.last_report_at == rec.heartbeat_at and rec.registered_at == rec.created_at
    assert (rec.registered, rec.timeout_s) == (True, 3)  # the report found it live: timeout kept
    assert await a.read(jobs_store.live_worker_ids, 3.0) == ["w"]
    assert await b.write(sql.expire_workers) == []

    # Silent for 10 s by the database's clock: out of the live ids, expired once.
    await a.write(lambda conn: conn.execute(
        "UPDATE registry_workers SET heartbeat_at = heartbeat_at - INTERVAL '10 seconds'"))
    assert await a.read(jobs_store.live_worker_ids, 3.0) == []
    assert await b.write(sql.expire_workers) == ["w"]
    assert await a.write(sql.expire_workers) == []
