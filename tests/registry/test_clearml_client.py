"""An unmodified third-party client of the original reporting API (ClearML's APIClient) logs in,
registers, reports status, lists and unregisters against our server."""

import json
import subprocess
import sys
from pathlib import Path

import trio

from ..pg import on_both_stores

ROOT = Path(__file__).parents[2]


@on_both_stores
async def test_clearml_client_register_report_list_unregister(server_factory):
    srv = await server_factory(auth={"api_key": "k", "clients": [{"access_key": "ak", "secret_key": "sk"}]})
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, "-m", "tests.registry.clearml_client", srv.url, "ak", "sk"],
            capture_stdout=True, capture_stderr=True, check=False, cwd=str(ROOT),
        )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    found = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert "clearml-1" in found["listed"]
    assert found["task"] == "t-42" and found["tags"] == ["cm"]
    assert "clearml-1" not in found["after_unregister"]
    view = (await srv.client.get("/workers/clearml-1")).json()  # the read API sees it too
    assert view["node_id"] == "clearml-1"
    await srv.client.aclose()
