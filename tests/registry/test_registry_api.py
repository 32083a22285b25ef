"""The worker registry end to end over HTTP: read API, reporting API, expiry, persistence."""

import time
from datetime import datetime, timezone
from functools import partial

import pytest
import trio

from amp_runtime.core.clock import naive_utc, utcnow
from tests.helpers import wait_until
from ..pg import direct_connection, on_both_stores


def data(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["result_code"] == 200
    return body["data"]


@on_both_stores
async def test_own_worker_registered_in_both_apis(server):
    c = server.client
    r = await c.get("/workers")
    assert r.status_code == 200
    assert [w["node_id"] for w in r.json()["workers"]] == ["worker-01"]
    detail = (await c.get("/workers/worker-01")).json()
    assert set(detail) == {"node_id", "created_at", "registered_at", "heartbeat_at", "info"}
    assert detail["created_at"].endswith("Z") and len(detail["created_at"]) == 27
    assert detail["info"]["version"]
    workers = data(await c.post("/workers.get_all", json={}))["workers"]
    assert [w["id"] for w in workers] == ["worker-01"]
    assert await server.runtime.services.registry.live_workers() == ["worker-01"]


async def test_read_api_errors(server):
    c = server.client
    r = await c.get("/workers/9bad")
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_WORKER_ID"
    r = await c.get("/workers/nobody")
    assert r.status_code == 404 and r.json() == {"error_code": "WORKER_NOT_FOUND", "error_message": r.json()["error_message"]}


@on_both_stores
async def test_register_report_unregister(server):
    c = server.client
    data(await c.post("/workers.register", json={"worker": "node-a", "tags": ["gpu"], "system_tags": ["amp-url=http://x:1"],
                                                 "queues": ["q1"]}))
    w = {x["id"]: x for x in data(await c.post("/workers.get_all", json={}))["workers"]}["node-a"]
    assert w["ip"] == "127.0.0.1" and w["tags"] == ["gpu"] and w["system_tags"] == ["amp-url=http://x:1"]
    assert w["queues"] == [{"id": "q1", "name": "q1"}] and w["task"] is None and w["last_report_time"] is None
    registered = datetime.strptime(w["register_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(registered.timestamp() - time.time()) < 30
    assert "node-a" in await server.runtime.services.registry.live_workers()
    assert (await c.get("/workers/node-a")).status_code == 200

    data(await c.post("/workers.status_report", json={"worker": "node-a", "timestamp": int(time.time() * 1000),
                                                      "task": "t1", "queue": "q1", "tags": ["cpu"]}))
    w = {x["id"]: x for x in data(await c.post("/workers.get_all", json={}))["workers"]}["node-a"]
    assert w["task"] == {"id": "t1", "name": "t1"} and w["queue"]["id"] == "q1"
    assert w["tags"] == ["cpu"] and w["queues"] == [{"id": "q1", "name": "q1"}]  # queues untouched when null
    assert w["last_report_time"] is not None

    data(await c.post("/workers.status_report", json={"worker": "node-a", "timestamp": int(time.time())}))
    w = {x["id"]: x for x in data(await c.post("/workers.get_all", json={}))["workers"]}["node-a"]
    assert w["task"] is None and w["queue"] is None and w["tags"] == ["cpu"]

    data(await c.post("/workers.unregister", json={"worker": "node-a"}))
    ids = [x["id"] for x in data(await c.post("/workers.get_all", json={}))["workers"]]
    assert ids == ["worker-01"]
    assert "node-a" not in await server.runtime.services.registry.live_workers()
    # the read API still knows it
    assert "node-a" in [w["node_id"] for w in (await c.get("/workers")).json()["workers"]]


@on_both_stores
async def test_status_report_registers_unknown_worker(server):
    c = server.client
    data(await c.post("/workers.status_report", json={"worker": "implicit", "timestamp": time.time()}))
    assert "implicit" in [x["id"] for x in data(await c.post("/workers.get_all", json={}))["workers"]]


@on_both_stores
async def test_created_at_kept_across_reregistration(server):
    c = server.client
    data(await c.post("/workers.register", json={"worker": "node-b"}))
    first = (await c.get("/workers/node-b")).json()
    data(await c.post("/workers.unregister", json={"worker": "node-b"}))
    data(await c.post("/workers.register", json={"worker": "node-b"}))
    second = (await c.get("/workers/node-b")).json()
    assert second["created_at"] == first["created_at"]
    assert second["registered_at"] > first["registered_at"]


@on_both_stores
async def test_created_at_kept_across_restart(server_factory, tmp_path):
    srv = await server_factory(registry={"heartbeat_s": 0.05})
    data(await srv.client.post("/workers.register", json={"worker": "node-c"}))
    own = (await srv.client.get("/workers/worker-01")).json()
    remote = (await srv.client.get("/workers/node-c")).json()
    await srv.stop()
    await wait_until(lambda: srv.runtime.store._db.conn is None, timeout=20)
    from tests.helpers import start_server
    import trio

    async with trio.open_nursery() as nursery:
        again = await start_server(nursery, tmp_path / "data0", store={"url": srv.runtime.config.store.url})
        own2 = (await again.client.get("/workers/worker-01")).json()
        remote2 = (await again.client.get("/workers/node-c")).json()
        assert own2["created_at"] == own["created_at"]
        assert own2["registered_at"] > own["registered_at"]
        assert remote2 == remote
        ids = [x["id"] for x in data(await again.client.post("/workers.get_all", json={}))["workers"]]
        assert ids == ["node-c", "worker-01"]
        await again.client.aclose()
        await again.stop()


@on_both_stores
async def test_expiry_by_timer(server_factory):
    srv = await server_factory(registry={"expiry_check_s": 0.1})
    c = srv.client
    data(await c.post("/workers.register", json={"worker": "short", "timeout": 1}))
    assert "short" in await srv.runtime.services.registry.live_workers()

    async def gone():
        rec = await srv.runtime.services.registry.get("short")
        return not rec.registered

    await wait_until(gone, timeout=5)
    ids = [x["id"] for x in data(await c.post("/workers.get_all", json={"last_seen": 0}))["workers"]]
    assert "short" not in ids
    assert "short" not in await srv.runtime.services.registry.live_workers(max_age_s=1000)
    # a report brings it back
    data(await c.post("/workers.status_report", json={"worker": "short", "timestamp": time.time()}))
    assert "short" in await srv.runtime.services.registry.live_workers()


@on_both_stores
async def test_tag_filters_and_count(server):
    c = server.client
    for name, tags, sys in (("w-a", ["a"], ["x"]), ("w-b", ["b"], ["x"]), ("w-ab", ["a", "b"], []), ("w-c", ["c"], ["y"])):
        data(await c.post("/workers.register", json={"worker": name, "tags": tags, "system_tags": sys}))

    async def ids(**flt):
        found = [x["id"] for x in data(await c.post("/workers.get_all", json=flt))["workers"]]
        count = data(await c.post("/workers.get_count", json=flt))["count"]
        assert count == len(found)
        return found

    assert await ids(tags=["a"]) == ["w-a", "w-ab"]
    assert await ids(tags=["a", "c", "-b"]) == ["w-a", "w-c"]
    assert await ids(tags=["-a"]) == ["w-b", "w-c", "worker-01"]
    assert await ids(system_tags=["x"]) == ["w-a", "w-b"]
    assert await ids(tags=["a"], system_tags=["x"]) == ["w-a"]
    assert await ids(tags=["a"], system_tags=["-x"]) == ["w-ab"]
    assert await ids(last_seen="none", tags=["c"]) == ["w-c"]
    assert await ids(last_seen=3600, tags=["c"]) == ["w-c"]
    assert data(await c.post("/workers.get_count", json={}))["count"] == 5


async def test_reporting_envelope_prefix_and_get_with_body(server):
    c = server.client
    r = await c.request("GET", "/v2.23/workers.get_all", json={"tags": ["none-such"]})
    body = r.json()
    assert r.status_code == 200 and body["data"] == {"workers": []}
    meta = body["meta"]
    assert meta["endpoint"] == {"name": "workers.get_all", "requested_version": "2.23", "actual_version": "2.23"}
    assert meta["result_code"] == 200 and meta["result_msg"] == "OK" and meta["id"]
    r = await c.post("/v2.4/workers.get_count", json={})
    assert r.status_code == 200 and r.json()["meta"]["endpoint"]["requested_version"] == "2.4"
    r = await c.post("/v1.2/workers.get_count", json={})
    assert r.status_code == 404
    r = await c.post("/workers.register", json={"timeout": 5})
    assert r.status_code == 400
    assert r.json()["meta"]["result_code"] == 400 and "worker" in r.json()["meta"]["result_msg"]
    assert r.json()["data"] == {}
    r = await c.post("/workers.register", json={"worker": "9nope"})
    assert r.status_code == 400 and r.json()["meta"]["result_code"] == 400
    r = await c.post("/workers.register", json={"worker": "many", "tags": [str(i) for i in range(65)]})
    assert r.status_code == 400
    r = await c.post("/workers.get_all", json={"last_seen": "soon"})
    assert r.status_code == 400


@on_both_stores
@pytest.mark.parametrize("value,expected", [(0, True), ("none", True), (1, False)])
async def test_last_seen(server, value, expected):
    c = server.client
    data(await c.post("/workers.status_report", json={"worker": "old", "timestamp": time.time()}))

    async def aged():  # silent for more than last_seen=1
        rec = await server.runtime.services.registry.get("old")
        return (naive_utc(utcnow()) - rec.heartbeat_at).total_seconds() > 1.1

    await wait_until(aged, timeout=5, interval=0.1)
    ids = [x["id"] for x in data(await c.post("/workers.get_all", json={"last_seen": value}))["workers"]]
    assert ("old" in ids) is expected


@on_both_stores
async def test_own_worker_reports_its_running_task(server_factory):
    srv = await server_factory(registry={"heartbeat_s": 0.05})
    c = srv.client
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(c.post, "/task", json={"function": "sleep", "input": {"ms": 1500}, "contract": 1}))

        async def task_shown():
            (own,) = [w for w in data(await c.post("/workers.get_all", json={}))["workers"] if w["id"] == "worker-01"]
            return own["task"] is not None

        await wait_until(task_shown, timeout=5, interval=0.05)


@on_both_stores
async def test_drain_unregisters_own_workers(server_factory, store_url):
    srv = await server_factory()
    await srv.stop()
    await wait_until(lambda: srv.runtime.store._db.conn is None, timeout=20)
    with direct_connection(store_url, srv.runtime.config.store_path.parent) as conn:
        assert conn.execute("SELECT id, registered FROM registry_workers").fetchall() == [("worker-01", False)]


@on_both_stores
async def test_get_all_defaults_to_last_seen_but_get_count_does_not(server_factory):
    srv = await server_factory(registry={"default_last_seen_s": 1, "heartbeat_s": 3600})
    c = srv.client
    data(await c.post("/workers.register", json={"worker": "quiet"}))

    async def aged():
        rec = await srv.runtime.services.registry.get("quiet")
        return (naive_utc(utcnow()) - rec.heartbeat_at).total_seconds() > 1.1

    await wait_until(aged, timeout=5, interval=0.1)
    ids = [x["id"] for x in data(await c.post("/workers.get_all", json={}))["workers"]]
    assert "quiet" not in ids
    assert data(await c.post("/workers.get_count", json={"tags": []}))["count"] == 2  # quiet + worker-01
