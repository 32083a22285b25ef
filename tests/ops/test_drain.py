"""SIGTERM while a job runs: the process pauses the job at a batch boundary, persists its
progress, writes nothing after it exits, exits 0 within `shutdown_grace_s` + 2 s, and the job
resumes at the next start as it would after kill -9."""

from __future__ import annotations

import signal
from pathlib import Path

import duckdb
import httpx
import trio

from ..helpers import spawn_server, wait_until
from ..jobs.jobutil import DATASET, query, table_dir, wait_for_files, wait_for_status

GRACE_S = 3.0
LAST_BLOCK = 19_999
FILES = (LAST_BLOCK + 1) // 20  # per table
ENV = {"AMP_JOBS_BATCH_BLOCKS": "20", "AMP_SERVER_SHUTDOWN_GRACE_S": str(GRACE_S)}


def parquet_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` (temporaries too): path -> (size, mtime_ns)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def stored(data: Path, sql: str, *params) -> list[tuple]:
    conn = duckdb.connect(str(data / "amp_runtime.duckdb"))
    try:
        return conn.execute(sql, list(params)).fetchall()
    finally:
        conn.close()


async def call_stuck_task(url: str) -> None:
    """A sync task whose function never returns; the server going away ends the call."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        try:
            await client.post("/task", json={"function": "stuck", "contract": 1, "input": {}})
        except httpx.HTTPError:
            pass


async def busy_slots(client) -> bool:
    return (await client.get("/health")).json()["slots"]["busy"] >= 1


async def sigterm_and_time_exit(server, limit_s: float) -> tuple[int, float]:
    started = trio.current_time()
    server.send_signal(signal.SIGTERM)
    code = await server.wait(timeout=limit_s + 10)  # measured below, so a slow exit fails by its time
    return code, trio.current_time() - started


async def test_sigterm_mid_finite_job_exits_promptly_and_the_job_resumes_to_one_row_per_block(nursery, tmp_path):
    data = tmp_path / "d"
    first = await spawn_server(nursery, data, env=ENV)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        job = (await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": LAST_BLOCK})).json()
        await wait_for_files(client, job["id"], 10)
    code, took = await sigterm_and_time_exit(first, GRACE_S + 2)
    log = first.output.decode(errors="replace")
    assert code == 0, log
    assert took <= GRACE_S + 2, f"exit took {took:.1f}s:\n{log}"
    assert "no longer live" not in log, log

    # Nothing is written once the process is gone: the listing stays the same.
    root = data / "datasets"
    at_exit = parquet_files(root)
    with trio.move_on_after(1.0):
        await wait_until(lambda: parquet_files(root) != at_exit, timeout=2, interval=0.05)
    assert parquet_files(root) == at_exit, "files changed after the process exited"
    assert not [p for p in at_exit if p.endswith(".tmp")], "a temporary was left behind"

    # The job is paused, not failed, and every file on disk is counted in its progress.
    assert stored(data, "SELECT status, error FROM jobs WHERE id = ?", job["id"]) == [("Running", None)]
    counted = dict(stored(data, "SELECT table_name, files_count FROM job_progress WHERE job_id = ?", job["id"]))
    for table in ("blocks", "transactions"):
        assert counted[table] == len(list(table_dir(data, table).glob("*.parquet")))
    assert counted["blocks"] < FILES, "the job finished before SIGTERM: make it longer"

    second = await spawn_server(nursery, data, env=ENV)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
        done = await wait_for_status(client, job["id"], "Completed", "Failed", timeout=90)
        assert done["status"] == "Completed", done
        progress = (await client.get(f"/jobs/{job['id']}/progress")).json()["tables"]
    code, _ = await sigterm_and_time_exit(second, GRACE_S + 2)
    assert code == 0
    await wait_until(lambda: b"resumed 1 active job" in second.output, timeout=10)
    assert query(data, "SELECT count(*), count(DISTINCT block_num), min(block_num), max(block_num) FROM {blocks}") == [
        (LAST_BLOCK + 1, LAST_BLOCK + 1, 0, LAST_BLOCK)
    ]
    (txs,) = query(data, "SELECT sum(tx_count) FROM {blocks}")[0]
    assert query(data, "SELECT count(*), count(DISTINCT (block_num, tx_index)) FROM {transactions}") == [(txs, txs)]
    for table in ("blocks", "transactions"):
        assert progress[table]["files_count"] == len(list(table_dir(data, table).glob("*.parquet"))) == FILES


STUCK_ENV = {**ENV, "AMP_FUNCTIONS_MODULES": '["tests.ops.stuck"]', "AMPTEST_STUCK_FROM_BLOCK": "100"}


async def test_a_write_stuck_in_its_thread_is_abandoned_and_the_exit_stays_bounded(nursery, tmp_path):
    data = tmp_path / "d"
    # The drain unregisters the process's own workers long before this grace ends: that must
    # not count as a dead worker (the job would fail within 0.5 s).
    env = {**STUCK_ENV, "AMP_JOBS_EXPIRY_GRACE_S": "0.5", "AMP_JOBS_WORKER_CHECK_S": "0.2"}
    server = await spawn_server(nursery, data, env=env)
    dataset = "test/stuck@1.0.0"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        job = (await client.post("/jobs", json={"dataset": dataset, "start_block": 0, "end_block": 999})).json()
        await wait_for_files(client, job["id"], 5)  # blocks 0-99; the write of 100-119 never returns
    ticks = table_dir(data, "ticks", "test/stuck/1.0.0")
    code, took = await sigterm_and_time_exit(server, GRACE_S + 2)
    log = server.output.decode(errors="replace")
    assert code == 0, log
    assert took <= GRACE_S + 2, f"exit took {took:.1f}s:\n{log}"
    assert f"abandoned the write of {dataset} table ticks blocks 100-119" in log, log
    assert f"still running on worker-01: job:{job['id']}" in log, log
    assert "no longer live" not in log, log
    assert sorted(p.name for p in ticks.glob("*.parquet")) == [f"{b}-{b + 19}.parquet" for b in (0, 20, 40, 60, 80)]
    assert stored(data, "SELECT status FROM jobs WHERE id = ?", job["id"]) == [("Running",)]
    assert stored(data, "SELECT files_count, current_block FROM job_progress WHERE job_id = ?", job["id"]) == [(5, 99)]


async def test_a_task_stuck_in_its_thread_is_abandoned_and_the_exit_stays_bounded(nursery, tmp_path):
    server = await spawn_server(nursery, tmp_path / "d", env=STUCK_ENV)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        nursery.start_soon(call_stuck_task, server.url)
        await wait_until(lambda: busy_slots(client), timeout=10, interval=0.05)
    code, took = await sigterm_and_time_exit(server, GRACE_S + 2)
    log = server.output.decode(errors="replace")
    assert code == 0, log
    assert took <= GRACE_S + 2, f"exit took {took:.1f}s:\n{log}"
    assert "grace period of 3.0s over: cancelling the rest (still running on worker-01: " in log, log
