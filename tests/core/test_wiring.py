"""The composition root: services get their collaborators, routes get their family's service."""

from datetime import datetime
from types import SimpleNamespace

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from amp_runtime.app import create_app
from amp_runtime.core.logs import LogRing
from amp_runtime.wiring import build_services

from ..helpers import make_config, running_store


async def test_each_service_gets_its_collaborators_and_none_gets_a_runtime(tmp_path):
    config = make_config(tmp_path)
    async with running_store(tmp_path / "s.duckdb") as store:
        services = build_services(config, store, version="0", uptime_s=lambda: 1.0, logs=LogRing(), bound_urls=lambda: [])
        assert services.jobs.tasks is services.tasks
        assert services.cluster.tasks is services.tasks
        assert services.observability.tasks is services.tasks
        assert services.by_family()["reporting"] is services.registry
        for service in [*services.running(), services.observability]:
            assert not hasattr(service, "runtime"), type(service).__name__


class FakeRegistry:
    """The two reads the registry's routes make, and the config they read."""

    def __init__(self, config):
        self.config = config

    async def all_records(self):
        return [SimpleNamespace(id="from-the-fake", heartbeat_at=datetime(2026, 1, 1))]


async def test_routes_are_handed_the_service_wired_for_their_family(tmp_path):
    config = make_config(tmp_path, auth={"api_key": "k"})
    app = create_app(config, {"registry": FakeRegistry(config)})
    hconfig = HypercornConfig()
    hconfig.bind = ["127.0.0.1:0"]
    hconfig.accesslog = None
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(lambda task_status: serve(app, hconfig, task_status=task_status))
        async with httpx.AsyncClient(base_url=url.replace("0.0.0.0", "127.0.0.1")) as client:
            assert (await client.get("/workers")).status_code == 401  # the key handed over at wiring time
            r = await client.get("/workers", headers={"Authorization": "k"})
            assert r.status_code == 200, r.text
            assert [w["node_id"] for w in r.json()["workers"]] == ["from-the-fake"]
        nursery.cancel_scope.cancel()
