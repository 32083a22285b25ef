"""The registry SQL on both store backends (`any_store`: DuckDB, then PostgreSQL)."""

from datetime import datetime

from amp_runtime.registry import store as sql
from amp_runtime.registry.models import WorkerInfo, WorkerRecord

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
