"""Helpers for registry tests: reporting-API calls that unwrap the meta/data envelope."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import trio


async def call(client: httpx.AsyncClient, endpoint: str, body: dict | None = None, *, method: str = "POST",
               status: int = 200, **kwargs) -> dict:
    """`endpoint` with `body`; checks the status and the envelope; returns `data` (or the meta on errors)."""
    response = await client.request(method, f"/{endpoint}", json=body if body is not None else {}, **kwargs)
    assert response.status_code == status, (endpoint, response.status_code, response.text)
    payload = response.json()
    assert payload["meta"]["result_code"] == status
    assert payload["meta"]["endpoint"]["name"] == endpoint.rsplit("/", 1)[-1]
    return payload["data"] if status == 200 else payload["meta"]


async def worker_ids(client: httpx.AsyncClient, **filters) -> list[str]:
    data = await call(client, "workers.get_all", filters)
    return [w["id"] for w in data["workers"]]


async def run_clearml_client(url: str) -> dict:
    """Run the unmodified ClearML client (`tests/registry/clearml_client.py`, access key ak,
    secret sk) against `url`; checks what every run must show and returns its findings."""
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, "-m", "tests.registry.clearml_client", url, "ak", "sk"],
            capture_stdout=True, capture_stderr=True, check=False, cwd=str(Path(__file__).parents[2]),
        )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    found = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert "clearml-1" in found["listed"]
    assert found["task"] == "t-42" and found["tags"] == ["cm"]
    assert "clearml-1" not in found["after_unregister"]
    return found
