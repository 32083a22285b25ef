"""Faults with a real server process: kill -9 mid-job, and a graceful restart."""

import signal

import httpx

from ..helpers import spawn_server, wait_until
from ..pg import direct_connection, store_env
from .jobutil import DATASET, query, table_dir, wait_for_files, wait_for_status

SMALL_BATCHES = {"AMP_JOBS_BATCH_BLOCKS": "20"}


async def test_kill9_mid_job_then_restart_finishes_with_one_row_per_block(nursery, tmp_path, store_url):
    data = tmp_path / "d"
    env = {**SMALL_BATCHES, **store_env(store_url)}
    first = await spawn_server(nursery, data, env=env)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        job = (await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 11_999})).json()
        await wait_for_files(client, job["id"], 20)
    first.kill9()
    await first.wait()
    written_before_restart = len(list(table_dir(data, "blocks").glob("*.parquet")))
    assert written_before_restart < 600, "the job finished before the kill: make it longer"
    wind_back_blocks_progress(store_url, data, job["id"], files=5)

    second = await spawn_server(nursery, data, env=env)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
        done = await wait_for_status(client, job["id"], "Completed", "Failed", timeout=60)
        await wait_until(lambda: b"resumed 1 active job" in second.output, timeout=10)
        assert (b"store postgresql://" in second.output) == bool(store_url)
        assert done["status"] == "Completed", done
        progress = (await client.get(f"/jobs/{job['id']}/progress")).json()["tables"]
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0

    assert query(data, "SELECT count(*), count(DISTINCT block_num), min(block_num), max(block_num) FROM {blocks}") == [
        (12_000, 12_000, 0, 11_999)
    ]
    (txs,) = query(data, "SELECT sum(tx_count) FROM {blocks}")[0]
    assert query(data, "SELECT count(*), count(DISTINCT (block_num, tx_index)) FROM {transactions}") == [(txs, txs)]
    for table in ("blocks", "transactions"):
        files = list(table_dir(data, table).glob("*.parquet"))
        assert not list(table_dir(data, table).glob(".*.tmp")), "no temporaries left behind"
        assert progress[table]["files_count"] == len(files) == 600
        assert progress[table]["total_size_bytes"] == sum(f.stat().st_size for f in files)
        assert progress[table]["current_block"] == 11_999


def wind_back_blocks_progress(store_url: str, data, job_id: int, files: int) -> None:
    """Make the persisted progress of `blocks` lag the files on disk by `files` files, as when
    the process dies between writing files and committing their progress: the restart must
    rewrite those files under the same names, not add rows."""
    with direct_connection(store_url, data) as conn:
        files_count, current = conn.execute(
            "SELECT files_count, current_block FROM job_progress WHERE job_id = ? AND table_name = 'blocks'",
            [job_id],
        ).fetchone()
        assert files_count > files
        lagging = [
            table_dir(data, "blocks") / f"{last - 19}-{last}.parquet"
            for last in range(current, current - 20 * files, -20)
        ]
        size = sum(path.stat().st_size for path in lagging)
        conn.execute(
            "UPDATE job_progress SET files_count = files_count - ?, total_size_bytes = total_size_bytes - ?,"
            " current_block = current_block - ? WHERE job_id = ? AND table_name = 'blocks'",
            [files, size, 20 * files, job_id],
        )


async def test_sigterm_pauses_a_running_job_which_resumes_after_restart(nursery, tmp_path, store_url):
    data = tmp_path / "d"
    env = {"AMP_JOBS_BATCH_BLOCKS": "50", "AMP_JOBS_CONTINUOUS_BLOCKS_PER_S": "1000", **store_env(store_url)}
    first = await spawn_server(nursery, data, env=env)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        job = (await client.post("/jobs", json={"dataset": DATASET})).json()
        await wait_for_files(client, job["id"], 2)
    first.send_signal(signal.SIGTERM)
    assert await first.wait(timeout=8) == 0  # well inside the 10 s grace: the slot was freed
    # The drain made progress exact: every file on disk is counted, and the job stays Running.
    with direct_connection(store_url, data) as conn:
        assert conn.execute("SELECT status FROM jobs WHERE id = ?", [job["id"]]).fetchone() == ("Running",)
        counted = dict(conn.execute(
            "SELECT table_name, files_count FROM job_progress WHERE job_id = ?", [job["id"]]
        ).fetchall())
    for table in ("blocks", "transactions"):
        assert counted[table] == len(list(table_dir(data, table).glob("*.parquet")))

    second = await spawn_server(nursery, data, env=env)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
        await wait_for_files(client, job["id"], counted["blocks"] + 2)
        assert (await client.get(f"/jobs/{job['id']}")).json()["status"] == "Running"
        await client.put(f"/jobs/{job['id']}/stop")
        await wait_for_status(client, job["id"], "Stopped")
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0
    (count, distinct) = query(data, "SELECT count(*), count(DISTINCT block_num) FROM {blocks}")[0]
    assert count == distinct
