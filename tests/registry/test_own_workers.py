"""The runtime's own workers in the registry: their current task, activity, and unregistering
on a graceful shutdown (the record stays, marked unregistered)."""

from __future__ import annotations

import time

import httpx
import trio

from tests.helpers import start_server, wait_until

from ..pg import direct_connection
from .util import call


async def test_own_workers_report_stats_and_task_and_unregister_on_shutdown(tmp_path, store_url):
    store = {"store": {"url": store_url}} if store_url else {}
    async with trio.open_nursery() as nursery:
        srv = await start_server(nursery, tmp_path / "data", registry={"heartbeat_s": 0.05}, **store)
        c = srv.client
        await wait_until(lambda: _reported(c), timeout=10)
        keys = await call(c, "workers.get_metric_keys", {"worker_ids": ["worker-01"]})
        names = {k for cat in keys["categories"] for k in cat["metric_keys"]}
        assert {"cpu_usage", "memory_used", "memory_free", "network_tx", "disk_free_home"} <= names
        nursery.start_soon(_run_sleep_task, c)  # a running task shows as the worker's task
        await wait_until(lambda: _has_task(c), timeout=10)
        activity = await call(c, "workers.get_activity_report",
                              {"from_date": time.time() - 60, "to_date": time.time() + 60, "interval": 1})
        assert sum(activity["active"]["counts"]) >= 1 and sum(activity["total"]["counts"]) >= 1
        srv.runtime.request_stop()
    await srv.client.aclose()
    with direct_connection(store_url, srv.runtime.config.store_path.parent) as conn:
        registered = conn.execute("SELECT registered FROM registry_workers WHERE id = 'worker-01'").fetchone()
    assert registered == (False,)  # unregistered on graceful shutdown


async def _reported(client) -> bool:
    data = await call(client, "workers.get_all")
    return any(w["id"] == "worker-01" and w["last_report_time"] for w in data["workers"])


async def _has_task(client) -> bool:
    data = await call(client, "workers.get_all")
    return any(w["id"] == "worker-01" and w["task"] for w in data["workers"])


async def _run_sleep_task(client) -> None:
    try:
        await client.post("/task", json={"function": "sleep", "input": {"ms": 1500}, "contract": 1, "mode": "sync"})
    except httpx.HTTPError:
        pass
