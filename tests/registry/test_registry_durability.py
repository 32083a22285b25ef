"""An acknowledged registration survives kill -9: it was committed before the answer."""

import time

import httpx

from tests.helpers import spawn_server

from ..pg import store_env


async def test_registration_survives_kill9(nursery, tmp_path, store_url):
    ts = int(time.time()) // 10 * 10 - 60  # inside stats retention, 10-aligned
    data_dir = tmp_path / "data"
    first = await spawn_server(nursery, data_dir, env=store_env(store_url))
    async with httpx.AsyncClient(base_url=first.url) as c:
        r = await c.post("/workers.register", json={"worker": "durable-node", "system_tags": ["amp-url=http://n:1"]})
        assert r.status_code == 200, r.text
        r = await c.post("/workers.status_report", json={"worker": "durable-node", "timestamp": ts * 1000,
                                                         "machine_stats": {"memory_used": 0}})
        assert r.status_code == 200, r.text
        before = (await c.get("/workers/durable-node")).json()
    first.kill9()
    await first.wait()

    second = await spawn_server(nursery, data_dir, env=store_env(store_url))
    async with httpx.AsyncClient(base_url=second.url) as c:
        after = (await c.get("/workers/durable-node")).json()
        assert after == before
        r = await c.post("/workers.get_all", json={"system_tags": ["amp-url=http://n:1"]})
        assert [w["id"] for w in r.json()["data"]["workers"]] == ["durable-node"]
        r = await c.post("/workers.get_stats", json={"from_date": ts - 10, "to_date": ts + 10, "interval": 10,
                                                     "items": [{"key": "memory_used"}]})
        (worker,) = r.json()["data"]["workers"]
        assert worker["metrics"][0]["stats"][0]["values"] == [0.0]
    second.kill9()
    await second.wait()
