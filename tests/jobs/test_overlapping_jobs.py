"""Jobs over overlapping block ranges of one dataset version: a job whose files would overlap
files already written is refused (409 naming the job that wrote them), so a glob over a table
never counts a block twice. On a real socket (in-process server)."""

from ..pg import on_both_stores
from .jobutil import DATASET, query, wait_for_status


async def run_job(client, start, end) -> dict:
    r = await client.post("/jobs", json={"dataset": DATASET, "start_block": start, "end_block": end})
    assert r.status_code == 201, r.text
    return await wait_for_status(client, r.json()["id"], "Completed")


def blocks_counted(data_dir) -> tuple[int, int]:
    """(rows, distinct blocks) a glob over the blocks table sees."""
    return query(data_dir, "SELECT count(*), count(DISTINCT block_num) FROM {blocks}")[0]


@on_both_stores
async def test_an_overlapping_job_is_refused_naming_the_writer(server_factory, tmp_path):
    srv = await server_factory(jobs={"batch_blocks": 100})
    data_dir = tmp_path / "data0"
    first = await run_job(srv.client, 0, 949)

    for start, end in ((0, 999), (50, 149), (940, 2000), (900, None)):
        r = await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": start, "end_block": end})
        assert r.status_code == 409, (start, end, r.text)
        body = r.json()
        assert body["error_code"] == "OVERLAPPING_JOB" and f"job {first['id']} (Completed)" in body["error_message"]
    assert (await srv.client.get("/jobs", params={"status": "all"})).json()["jobs"][0]["id"] == first["id"]

    await run_job(srv.client, 0, 949)  # the same files again: rewritten identically
    await run_job(srv.client, 100, 949)  # on the same grid: a subset of the same files
    await run_job(srv.client, 950, 1999)  # after it
    assert blocks_counted(data_dir) == (2000, 2000)

    # Deleting the jobs leaves their files: still refused, the writer named as deleted.
    assert (await srv.client.delete("/jobs", params={"status": "terminal"})).status_code == 204
    r = await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 1900, "end_block": 2100})
    assert r.status_code == 409 and "a job since deleted" in r.json()["error_message"], r.text
    assert blocks_counted(data_dir) == (2000, 2000)
    await srv.client.aclose()


async def test_an_active_job_is_still_refused_as_active(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 100, "continuous_blocks_per_s": 1000})
    r = await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": None})
    job = await wait_for_status(srv.client, r.json()["id"], "Running")
    r = await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 50, "end_block": 149})
    assert r.status_code == 409 and r.json()["error_code"] == "ACTIVE_JOB_EXISTS", r.text
    await srv.client.put(f"/jobs/{job['id']}/stop")
    await wait_for_status(srv.client, job["id"], "Stopped")
    await srv.client.aclose()
