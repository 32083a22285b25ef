"""Crash durability: `kill -9` the server at seeded random points while work is in flight,
restart it on the same data dir (and the same store: DuckDB, then PostgreSQL), and check the
invariants each family promises.

One harness run (CRASH_CYCLES kill points, seed CRASH_SEED; override with AMPTEST_CRASH_CYCLES /
AMPTEST_CRASH_SEED to reproduce or lengthen) drives all families at once and records violations per
family; the tests below each assert one family's invariants over that shared run:

- store: every restart opens the store and answers /health "ok";
- jobs: no acknowledged job lost, none duplicated, `current_block` never goes back, files are
  never written twice (files_count matches the blocks covered);
- durable: an add under an invocation key applies at most once; re-sending the key returns the
  recorded result; the counter equals the number of keys (results are exactly 1..N);
- registry: registered workers stay listed with an unchanged `created_at`.
"""

from __future__ import annotations

import pytest
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from ..helpers import spawn_server
from ..pg import store_env

pytestmark = pytest.mark.system  # starts processes (see tests/conftest.py)

CRASH_SEED = int(os.environ.get("AMPTEST_CRASH_SEED", "1610"))
CRASH_CYCLES = int(os.environ.get("AMPTEST_CRASH_CYCLES", "20"))
BATCH_BLOCKS = 20
JOB_BLOCKS = 3000  # a job spans a few cycles at ~1-2k blocks/s; a multiple of BATCH_BLOCKS
DATASET = "example/blocks@1.0.0"
TERMINAL = {"Completed", "Stopped", "Failed"}
# Errors a request may meet when the server is killed under it: expected, not violations.
KILLED = (httpx.TransportError, trio.BrokenResourceError)


@dataclass
class Model:
    """What the client side knows for sure: what was acknowledged, and what may have happened."""

    violations: dict[str, list[str]] = field(default_factory=lambda: {
        "store": [], "jobs": [], "durable": [], "registry": []})
    kill_points: int = 0
    # jobs
    jobs: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (start, end)
    jobs_unacked: int = 0  # POST /jobs sent without seeing the answer
    max_block: dict[tuple[int, str], int] = field(default_factory=dict)
    progress_seen: int = 0
    # durable
    counter: str = ""  # /v1/templates/<counter's templateId>/workers, once the worker exists
    keys: dict[str, int] = field(default_factory=dict)  # invocation key -> the add's result
    pending_keys: list[str] = field(default_factory=list)
    # registry
    workers: set[str] = field(default_factory=set)
    created_at: dict[str, str] = field(default_factory=dict)

    def violation(self, family: str, message: str) -> None:
        self.violations[family].append(message)


class Broken(Exception):
    """A family's response broke the contract; its loop stops for this cycle."""


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in statuses:
        raise Broken(f"{response.request.method} {response.request.url.path}: "
                     f"{response.status_code} {response.text[:200]}")
    return response


# -- checks after each restart -------------------------------------------------------------
async def check_jobs(client: httpx.AsyncClient, model: Model) -> None:
    listed = expect(await client.get("/jobs", params={"status": "all", "limit": 1000}), 200).json()["jobs"]
    ids = [job["id"] for job in listed]
    if len(ids) != len(set(ids)):
        model.violation("jobs", f"duplicated job ids in GET /jobs: {sorted(ids)}")
    missing = set(model.jobs) - set(ids)
    if missing:
        model.violation("jobs", f"acknowledged jobs lost: {sorted(missing)}")
    extra = [job for job in listed if job["id"] not in model.jobs]
    if len(extra) > model.jobs_unacked:
        model.violation("jobs", f"{len(extra)} unknown jobs but only {model.jobs_unacked} unacknowledged creates")
    for job in extra:  # a create whose answer the kill swallowed: it counts from now on
        d = job["descriptor"]
        model.jobs[job["id"]] = (d["start_block"], d["end_block"])
    model.jobs_unacked = 0
    for job_id in model.jobs:
        await record_progress(client, model, job_id)


async def record_progress(client: httpx.AsyncClient, model: Model, job_id: int) -> str:
    """Read a job's progress, check it against what was seen before; returns its status."""
    body = expect(await client.get(f"/jobs/{job_id}/progress"), 200).json()
    start, end = model.jobs[job_id]
    for table, progress in body["tables"].items():
        current, files = progress["current_block"], progress["files_count"]
        before = model.max_block.get((job_id, table))
        if before is not None and current < before:
            model.violation("jobs", f"job {job_id} {table}: current_block went back {before} -> {current}")
        model.max_block[(job_id, table)] = max(current, before or current)
        if files and files * BATCH_BLOCKS != current - start + 1:
            model.violation("jobs", f"job {job_id} {table}: {files} files for blocks {start}..{current}")
        if body["job_status"] == "Completed" and current != end:
            model.violation("jobs", f"job {job_id} {table}: Completed at block {current}, end is {end}")
    model.progress_seen += 1
    return body["job_status"]


async def check_durable(client: httpx.AsyncClient, model: Model) -> None:
    if not model.counter:
        return
    for key in list(model.pending_keys):  # sent, answer unknown: a retry must run it at most once
        await durable_add(client, model, key)
    for key in list(model.keys)[-3:]:  # recorded results stay retrievable under their key
        result = await invoke(client, model, "add", [1], key)
        if result != model.keys[key]:
            model.violation("durable", f"key {key} re-sent: result {result}, first answer was {model.keys[key]}")
    value = await invoke(client, model, "get", [], await new_key(client, model))
    if value != len(model.keys):
        model.violation("durable", f"counter is {value} after {len(model.keys)} keyed adds of 1")
    if sorted(model.keys.values()) != list(range(1, len(model.keys) + 1)):
        model.violation("durable", f"add results are not exactly 1..N: {sorted(model.keys.values())}")


async def check_registry(client: httpx.AsyncClient, model: Model) -> None:
    listed = {w["node_id"] for w in expect(await client.get("/workers"), 200).json()["workers"]}
    lost = (model.workers | {"worker-01"}) - listed
    if lost:
        model.violation("registry", f"registered workers missing from GET /workers: {sorted(lost)}")
    for worker in sorted(model.workers | {"worker-01"}):
        record = expect(await client.get(f"/workers/{worker}"), 200).json()
        first = model.created_at.setdefault(worker, record["created_at"])
        if record["created_at"] != first:
            model.violation("registry", f"{worker}: created_at changed {first} -> {record['created_at']}")


# -- work in flight ------------------------------------------------------------------------
async def invoke(client: httpx.AsyncClient, model: Model, function: str, params: list, key: str):
    response = expect(await client.post(f"{model.counter}/c1/invoke-and-await",
                                        params={"function": function, "invocation-key": key},
                                        json={"params": params}), 200)
    return response.json()["result"][0]


async def new_key(client: httpx.AsyncClient, model: Model) -> str:
    return expect(await client.post(f"{model.counter}/c1/key"), 200).json()["value"]


async def durable_add(client: httpx.AsyncClient, model: Model, key: str) -> None:
    result = await invoke(client, model, "add", [1], key)
    model.keys[key] = result
    model.pending_keys.remove(key)


async def durable_load(client: httpx.AsyncClient, model: Model) -> None:
    if not model.counter:
        templates = expect(await client.get("/v1/templates"), 200).json()
        template_id = next(t["templateId"] for t in templates if t["name"] == "counter")
        path = f"/v1/templates/{template_id}/workers"
        expect(await client.post(path, json={"name": "c1"}), 200, 409)
        model.counter = path
    while True:
        key = await new_key(client, model)
        model.pending_keys.append(key)  # before sending: a kill from here on leaves it unknown
        await durable_add(client, model, key)


async def jobs_load(client: httpx.AsyncClient, model: Model) -> None:
    while True:
        statuses = [await record_progress(client, model, job_id) for job_id in sorted(model.jobs)]
        if all(status in TERMINAL for status in statuses):
            start = len(model.jobs) * 100_000
            model.jobs_unacked += 1
            created = expect(await client.post("/jobs", json={
                "dataset": DATASET, "start_block": start, "end_block": start + JOB_BLOCKS - 1}), 201).json()
            model.jobs_unacked -= 1
            model.jobs[created["id"]] = (start, start + JOB_BLOCKS - 1)
        await trio.sleep(0.03)


async def registry_load(client: httpx.AsyncClient, model: Model, cycle: int) -> None:
    names = [f"crash-{cycle}-{i}" for i in range(3)] + sorted(model.workers)[:2]  # new + re-register
    for name in names:
        expect(await client.post("/workers.register", json={"worker": name, "tags": ["crash"]}), 200)
        model.workers.add(name)
        record = expect(await client.get(f"/workers/{name}"), 200).json()
        model.created_at.setdefault(name, record["created_at"])


async def tasks_load(client: httpx.AsyncClient) -> None:
    """Tasks are not durable: they are here as in-flight load (sync, stream) when the kill lands."""
    while True:
        await client.post("/task", json={"function": "sleep", "input": {"ms": 20}, "contract": 1})
        async with client.stream("POST", "/task", json={"function": "count", "input": {"n": 5, "delay_ms": 5},
                                                        "contract": 1, "mode": "stream"}) as response:
            async for _ in response.aiter_bytes():
                pass


async def guarded(model: Model, family: str, work) -> None:
    """Run one family's load; a kill's transport errors end it quietly, a broken answer is noted."""
    try:
        await work
    except KILLED:
        pass
    except Broken as err:
        model.violation(family, str(err))


def check_output(model: Model, cycle: int, output: bytearray) -> None:
    """A restart after a kill may log recovery, never a traceback."""
    text = output.decode(errors="replace")
    if "Traceback" in text:
        model.violation("store", f"run {cycle} logged a traceback:\n{text[-2000:]}")


# -- the harness ---------------------------------------------------------------------------
async def crash_harness(nursery: trio.Nursery, data_dir: Path, cycles: int, seed: int, store_url: str = "") -> Model:
    rng = random.Random(seed)
    model = Model()
    env = {"AMP_JOBS_BATCH_BLOCKS": str(BATCH_BLOCKS), "AMP_LOG_LEVEL": "warning", **store_env(store_url)}
    for cycle in range(cycles + 1):  # the last start only checks
        try:
            server = await spawn_server(nursery, data_dir, env=env, timeout=20)
        except Exception as err:  # noqa: BLE001 - a failed start is the finding
            model.violation("store", f"restart {cycle} failed: {err!r}")
            return model
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            health = await client.get("/health")
            if health.status_code != 200 or health.json().get("status") != "ok":
                model.violation("store", f"restart {cycle}: /health {health.status_code} {health.text[:200]}")
            for family, check in (("jobs", check_jobs), ("durable", check_durable), ("registry", check_registry)):
                try:
                    await check(client, model)
                except (Broken, httpx.HTTPError) as err:
                    model.violation(family, f"after restart {cycle}: {err}")
            if cycle == cycles:
                server.kill9()
                await server.wait()
                check_output(model, cycle, server.output)
                break
            delay = rng.uniform(0.05, 0.6)
            async with trio.open_nursery() as load:
                load.start_soon(guarded, model, "jobs", jobs_load(client, model))
                load.start_soon(guarded, model, "durable", durable_load(client, model))
                load.start_soon(guarded, model, "registry", registry_load(client, model, cycle))
                load.start_soon(guarded, model, "store", tasks_load(client))
                await trio.sleep(delay)
                server.kill9()  # first the kill, then the client side stops: nothing is acked late
                await server.wait()
                load.cancel_scope.cancel()
            check_output(model, cycle, server.output)
            model.kill_points += 1
    return model


_runs: dict[str, Model] = {}  # per backend


async def harness(nursery, tmp_path, store_url: str) -> Model:
    """One harness run per session and backend, shared by the family tests."""
    backend = "postgres" if store_url else "duckdb"
    if backend not in _runs:
        with trio.fail_after(150):
            _runs[backend] = await crash_harness(nursery, tmp_path / "data", CRASH_CYCLES, CRASH_SEED, store_url)
    return _runs[backend]


def report(model: Model, family: str) -> str:
    return f"seed {CRASH_SEED}, {model.kill_points} kill points: " + "\n".join(model.violations[family][:20])


async def test_store_opens_cleanly_after_every_kill(nursery, tmp_path, store_url):
    model = await harness(nursery, tmp_path, store_url)
    assert model.kill_points >= 20 and model.kill_points == CRASH_CYCLES
    assert not model.violations["store"], report(model, "store")


async def test_jobs_survive_kills_exactly_once_with_monotonic_progress(nursery, tmp_path, store_url):
    model = await harness(nursery, tmp_path, store_url)
    assert not model.violations["jobs"], report(model, "jobs")
    assert len(model.jobs) >= 2 and model.progress_seen >= CRASH_CYCLES, "the harness exercised too few jobs"


async def test_durable_keys_run_at_most_once_across_kills(nursery, tmp_path, store_url):
    model = await harness(nursery, tmp_path, store_url)
    assert not model.violations["durable"], report(model, "durable")
    assert len(model.keys) >= 10, "the harness completed too few keyed invocations"


async def test_registry_consistent_across_kills(nursery, tmp_path, store_url):
    model = await harness(nursery, tmp_path, store_url)
    assert not model.violations["registry"], report(model, "registry")
    assert len(model.workers) >= 10, "the harness registered too few workers"
