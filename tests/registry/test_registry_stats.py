"""Machine stats and activity: stored per report, aggregated by interval in DuckDB."""

import time
from statistics import mean

from tests.helpers import wait_until

from ..pg import on_both_stores

pytestmark = on_both_stores  # every test here runs on DuckDB and on PostgreSQL


def data(r):
    assert r.status_code == 200, r.text
    return r.json()["data"]


def base_ts() -> int:
    return int(time.time()) // 60 * 60 - 3600  # an hour ago, inside retention, 60-aligned


async def report(c, worker, ts, task=None, **stats):
    body = {"worker": worker, "timestamp": ts, "machine_stats": stats}
    if task:
        body["task"] = task
    data(await c.post("/workers.status_report", json=body))


async def test_get_stats_aggregates_per_interval(server_factory):
    srv = await server_factory(workers=[{"id": "own", "slots": 1}], registry={"heartbeat_s": 3600})
    c = srv.client
    t0 = base_ts()
    readings = {  # worker -> [(ts, cpu per core, memory_used)]
        "w1": [(t0 + 1, [10.0, 0.0], 100.0), (t0 + 5, [30.0, 50.0], 300.0), (t0 + 25, [0.0, 0.0], 0.0)],
        "w2": [(t0 + 2, [70.0], 700.0)],
    }
    for worker, rows in readings.items():
        for ts, cpu, mem in rows:
            await report(c, worker, ts * 1000 if worker == "w2" else ts, cpu_usage=cpu, memory_used=mem)

    body = {"from_date": t0, "to_date": t0 + 59, "interval": 20, "worker_ids": ["w1", "w2"],
            "items": [{"key": "cpu_usage", "aggregation": "max"}, {"key": "cpu_usage"},
                      {"key": "memory_used", "category": "min"}, {"key": "memory_used", "aggregation": "avg"}]}
    got = {w["worker"]: {m["metric"]: m for m in w["metrics"]} for w in data(await c.post("/workers.get_stats", json=body))["workers"]}
    assert set(got) == {"w1", "w2"}
    cpu = got["w1"]["cpu_usage"]
    assert "variant" not in cpu
    assert cpu["dates"] == [t0, t0 + 20]  # buckets without data are omitted
    first = [10.0, 0.0, 30.0, 50.0]
    assert cpu["stats"] == [{"aggregation": "max", "values": [max(first), 0.0]},
                            {"aggregation": "avg", "values": [mean(first), 0.0]}]
    mem = got["w1"]["memory_used"]
    assert mem["stats"] == [{"aggregation": "min", "values": [100.0, 0.0]},  # zero readings are stored
                            {"aggregation": "avg", "values": [200.0, 0.0]}]
    assert got["w2"]["cpu_usage"]["dates"] == [t0] and got["w2"]["cpu_usage"]["stats"][0]["values"] == [70.0]

    body.update(split_by_variant=True, items=[{"key": "cpu_usage", "aggregation": "avg"}], worker_ids=["w1"])
    (w1,) = data(await c.post("/workers.get_stats", json=body))["workers"]
    by_variant = {m["variant"]: m for m in w1["metrics"]}
    assert set(by_variant) == {"0", "1"}
    assert by_variant["0"]["stats"][0]["values"] == [mean([10.0, 30.0]), 0.0]
    assert by_variant["1"]["stats"][0]["values"] == [mean([0.0, 50.0]), 0.0]

    # A scalar metric's variant, split, is "total", as the reference server names it (never "").
    body.update(items=[{"key": "memory_used", "aggregation": "max"}, {"key": "cpu_usage", "aggregation": "max"}])
    (w1,) = data(await c.post("/workers.get_stats", json=body))["workers"]
    assert sorted((m["metric"], m["variant"]) for m in w1["metrics"]) == [
        ("cpu_usage", "0"), ("cpu_usage", "1"), ("memory_used", "total")]
    assert {m["variant"]: m for m in w1["metrics"]}["total"]["stats"][0]["values"] == [300.0, 0.0]
    body.update(split_by_variant=False)
    (w1,) = data(await c.post("/workers.get_stats", json=body))["workers"]
    assert all("variant" not in m for m in w1["metrics"])  # set only when split, as the reference says

    keys = data(await c.post("/workers.get_metric_keys", json={"worker_ids": ["w2"]}))
    assert keys == {"categories": [{"name": "cpu", "metric_keys": ["cpu_usage"]},
                                   {"name": "memory", "metric_keys": ["memory_used"]}]}

    for bad in ({**body, "interval": 0}, {**body, "items": [{"key": "nope"}]},
                {**body, "items": [{"key": "cpu_usage", "aggregation": "median"}]}, {**body, "to_date": t0 - 1}):
        r = await c.post("/workers.get_stats", json=bad)
        assert r.status_code == 400 and r.json()["meta"]["result_code"] == 400, bad


async def test_activity_report_counts_reporting_and_active_workers(server_factory):
    srv = await server_factory(registry={"heartbeat_s": 3600})
    c = srv.client
    t0 = base_ts()
    await report(c, "a1", t0 + 1, task="t1")
    await report(c, "a1", t0 + 2, task="t1")
    await report(c, "a2", t0 + 3)
    await report(c, "a2", t0 + 12, task="t2")
    await report(c, "a3", t0 + 35)
    got = data(await c.post("/workers.get_activity_report", json={"from_date": t0, "to_date": t0 + 59, "interval": 10}))
    assert got["total"] == {"dates": [t0, t0 + 10, t0 + 30], "counts": [2, 1, 1]}
    assert got["active"] == {"dates": [t0, t0 + 10], "counts": [1, 1]}


async def test_own_workers_report_real_stats_and_activity(server_factory):
    srv = await server_factory(registry={"heartbeat_s": 0.05})
    c = srv.client
    now = time.time()

    async def has_stats():
        body = {"from_date": now - 60, "to_date": now + 60, "interval": 1, "worker_ids": ["worker-01"],
                "items": [{"key": k} for k in ("cpu_usage", "memory_used", "memory_free", "disk_free_home")]}
        workers = data(await c.post("/workers.get_stats", json=body))["workers"]
        return workers and len(workers[0]["metrics"]) == 4

    await wait_until(has_stats, timeout=10, interval=0.1)
    activity = data(await c.post("/workers.get_activity_report", json={"from_date": now - 60, "to_date": now + 60, "interval": 60}))
    assert sum(activity["total"]["counts"]) >= 1
    keys = data(await c.post("/workers.get_metric_keys", json={}))["categories"]
    assert {k["name"] for k in keys} >= {"cpu", "memory", "disk", "network"}


async def test_retention_deletes_old_stats(server_factory):
    srv = await server_factory(registry={"heartbeat_s": 3600, "stats_retention_days": 1.0})
    c = srv.client
    old = time.time() - 3 * 86400
    await report(c, "r1", old, memory_used=1.0)
    from amp_runtime.registry import store as sql

    await srv.runtime.store.write(sql.delete_stats_before, time.time() - 86400)
    rows = await srv.runtime.store.execute("SELECT count(*) FROM registry_stats WHERE worker = 'r1'")
    assert rows == [(0,)]
