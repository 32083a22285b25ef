"""The size budget of the registry's time series: readings older than an hour are rolled up into
one row per series (worker, metric, variant) and minute by the retention, and the reporting API
answers for them as before for intervals of whole minutes."""

import time

import pytest
import trio

from amp_runtime.registry.service import FULL_RESOLUTION_S, ROLLUP_S

from ..pg import on_both_stores

EVERY_S = 10  # a report every 10 s: six per series and minute
SERIES = 3  # cpu_usage "0" and "1", memory_used


def data(r):
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def report_every(client, worker: str, start: int, count: int) -> None:
    for i in range(count):
        ts = start + i * EVERY_S
        body = {"worker": worker, "timestamp": ts, "machine_stats": {
            "cpu_usage": [float(i % 7), float(i % 11) * 3.5], "memory_used": 100.0 + (i * 37) % 50}}
        if i % 4 == 0:
            body["task"] = "t"
        data(await client.post("/workers.status_report", json=body))


async def answers(client, worker: str, start: int, end: int) -> tuple:
    stats = {"from_date": start, "to_date": end, "interval": 300, "worker_ids": [worker],
             "items": [{"key": k, "aggregation": a} for k in ("cpu_usage", "memory_used") for a in ("avg", "min", "max")]}
    merged = data(await client.post("/workers.get_stats", json=stats))
    split = data(await client.post("/workers.get_stats", json={**stats, "split_by_variant": True}))
    activity = data(await client.post("/workers.get_activity_report",
                                      json={"from_date": start, "to_date": end, "interval": 60}))
    return merged, split, activity


def approx(answer):
    """Means are recomputed from per-minute means and counts: equal up to float rounding."""
    if isinstance(answer, dict):
        return {k: approx(v) for k, v in answer.items()}
    if isinstance(answer, list):
        return [approx(v) for v in answer]
    return pytest.approx(answer) if isinstance(answer, float) else answer


async def rows(srv, table: str, worker: str, before: float | None = None) -> int:
    where = f" AND ts < {before}" if before is not None else ""
    return (await srv.runtime.store.execute(f"SELECT count(*) FROM {table} WHERE worker = '{worker}'{where}"))[0][0]


@on_both_stores
async def test_readings_older_than_an_hour_take_one_row_per_series_and_minute(server_factory):
    srv = await server_factory(registry={"heartbeat_s": 3600})
    client = srv.client
    now = int(time.time())
    old = (now - 3 * 3600) // 3600 * 3600  # an hour of readings, two to three hours ago
    await report_every(client, "b1", old, 3600 // EVERY_S)
    recent = now - 300
    await report_every(client, "b1", recent, 300 // EVERY_S)
    before = await answers(client, "b1", old, old + 3600 - 1)
    assert await rows(srv, "registry_stats", "b1") == SERIES * (3600 + 300) // EVERY_S

    for _ in range(2):  # a second round changes nothing
        await srv.runtime.services.registry.apply_retention()
        minutes = 3600 // ROLLUP_S
        assert await rows(srv, "registry_stats", "b1", before=now - FULL_RESOLUTION_S) == SERIES * minutes
        assert await rows(srv, "registry_activity", "b1", before=now - FULL_RESOLUTION_S) == minutes
        # The last hour keeps every reading.
        assert await rows(srv, "registry_stats", "b1") == SERIES * minutes + SERIES * 300 // EVERY_S
        assert await answers(client, "b1", old, old + 3600 - 1) == approx(before)


@on_both_stores
async def test_the_retention_still_deletes_rolled_up_rows_past_the_retention(server_factory):
    srv = await server_factory(registry={"heartbeat_s": 3600, "stats_retention_days": 1.0})
    client = srv.client
    old = (int(time.time()) - 3 * 3600) // 60 * 60
    await report_every(srv.client, "b2", old, 12)
    await srv.runtime.services.registry.apply_retention()
    assert await rows(srv, "registry_stats", "b2") == SERIES * 2
    srv.runtime.services.registry.settings.stats_retention_days = 1 / 24  # an hour
    await srv.runtime.services.registry.apply_retention()
    assert await rows(srv, "registry_stats", "b2") == 0 and await rows(srv, "registry_activity", "b2") == 0
    assert data(await client.post("/workers.get_metric_keys", json={"worker_ids": ["b2"]}))["categories"] == []


async def test_peers_rolling_up_at_once_count_each_reading_once(nursery, pg_url):
    from amp_runtime.core.store import insert_columns
    from amp_runtime.registry import store as sql

    from ..pg import peer_stores

    start, span = 3600.0 * 1000, 333 * ROLLUP_S  # long ago: all of it is rolled up
    raw = [("p1", "cpu_usage", str(i % 4), start + i * 0.1, float(i % 10)) for i in range(span * 10)]
    async with peer_stores(nursery, pg_url) as (a, b):
        await a.write(insert_columns, sql.STATS_TABLE, sql.STATS_COLUMNS, raw)
        async with trio.open_nursery() as both:
            for store in (a, b):
                both.start_soon(store.write, sql.roll_up_stats, start + span, ROLLUP_S)
        [(rows, samples, total)] = await a.execute(
            "SELECT count(*), sum(samples), sum(value * samples) FROM registry_stats WHERE worker = 'p1'")
    assert samples == len(raw) and total == pytest.approx(sum(r[4] for r in raw))
    assert rows == 4 * 333  # one per variant and minute
