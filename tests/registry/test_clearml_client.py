"""The original reporting API's own client (ClearML's APIClient, unmodified) against our server."""

import time

import pytest
import trio

pytest.importorskip("clearml")

CLIENTS = [{"access_key": "ACCESS", "secret_key": "SECRET"}]


def drive_client(url: str) -> dict:
    """Log in, register, report status, list, unregister — all through the third-party client."""
    from clearml.backend_api.session import Session
    from clearml.backend_api.session.client import APIClient

    client = APIClient(session=Session(api_key="ACCESS", secret_key="SECRET", host=url))
    seen = {}
    client.workers.register(worker="cm-worker-1", timeout=600, tags=["t1"], queues=["q1"])
    client.workers.status_report(worker="cm-worker-1", timestamp=int(time.time() * 1000), task="task-1",
                                 queue="q1", machine_stats={"cpu_usage": [1.0, 2.0], "memory_used": 10.0})
    workers = {w.id: w for w in client.workers.get_all(last_seen=600)}
    seen["ids"] = sorted(workers)
    mine = workers["cm-worker-1"]
    seen["task"] = mine.task.id
    seen["tags"] = list(mine.tags)
    seen["register_time"] = mine.register_time
    client.workers.unregister(worker="cm-worker-1")
    seen["after"] = sorted(w.id for w in client.workers.get_all())
    return seen


async def test_clearml_api_client(server_factory, monkeypatch, tmp_path):
    srv = await server_factory(auth={"api_key": "the-key", "clients": CLIENTS})
    for name, value in {"CLEARML_CONFIG_FILE": str(tmp_path / "none.conf"), "CLEARML_API_HOST": srv.url,
                        "CLEARML_WEB_HOST": srv.url, "CLEARML_FILES_HOST": srv.url}.items():
        monkeypatch.setenv(name, value)
    seen = await trio.to_thread.run_sync(drive_client, srv.url)
    assert seen["ids"] == ["cm-worker-1", "worker-01"]
    assert seen["task"] == "task-1" and seen["tags"] == ["t1"]
    assert seen["register_time"].year >= 2025  # parsed as a date-time by the client
    assert seen["after"] == ["worker-01"]
    rows = await srv.runtime.store.execute("SELECT count(*) FROM registry_stats WHERE worker = 'cm-worker-1'")
    assert rows == [(3,)]
