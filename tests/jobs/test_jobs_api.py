"""Jobs end to end over HTTP on a real socket (in-process server)."""

import amp_runtime
from amp_runtime.core.clock import utcnow
from amp_runtime.jobs import store as jobs_store

from ..helpers import wait_until
from .jobutil import DATASET, query, table_dir, wait_for_files, wait_for_status
from ..pg import on_both_stores


@amp_runtime.dataset("test/boom", version="1", tables=["rows"])
def boom(table, first_block, last_block):
    if first_block >= 200:
        raise RuntimeError(f"upstream node refused block {first_block}")
    return f"SELECT range AS block_num FROM range({first_block}, {last_block} + 1)"


class BadMessage(Exception):
    def __str__(self) -> str:  # its message raises what stops a program
        raise KeyboardInterrupt()


@amp_runtime.dataset("test/halt", version="1", tables=["rows"])
def halt(table, first_block, last_block):
    """A dataset whose code raises what is not an Exception (argparse's SystemExit, ...)."""
    if first_block >= 100:
        if first_block >= 2000:
            raise BadMessage()
        raise {0: SystemExit, 1: KeyboardInterrupt}[first_block // 1000]("halted at %d" % first_block)
    return f"SELECT range AS block_num FROM range({first_block}, {last_block} + 1)"


@amp_runtime.dataset("test/plain", version="1", tables=["rows"])
def plain(table, first_block, last_block):
    return f"SELECT range AS block_num FROM range({first_block}, {last_block} + 1)"


@on_both_stores
async def test_job_runs_to_completed_with_parquet_rows_matching_the_range(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 100})
    r = await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 5, "end_block": 1204})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "Scheduled" and job["node_id"] == "worker-01"
    assert job["descriptor"] == {"dataset": DATASET, "start_block": 5, "end_block": 1204}
    assert r.headers["Location"] == f"/jobs/{job['id']}"

    done = await wait_for_status(srv.client, job["id"], "Completed", "Failed")
    assert done["status"] == "Completed" and "error" not in done
    assert done["updated_at"] > done["created_at"]

    data_dir = srv.runtime.config.data_path
    assert query(data_dir, "SELECT count(*), count(DISTINCT block_num), min(block_num), max(block_num) FROM {blocks}") == [(1200, 1200, 5, 1204)]
    (expected_txs,) = query(data_dir, "SELECT sum(tx_count) FROM {blocks}")[0]
    assert query(data_dir, "SELECT count(*), count(DISTINCT (block_num, tx_index)) FROM {transactions}") == [(expected_txs, expected_txs)]

    progress = (await srv.client.get(f"/jobs/{job['id']}/progress")).json()
    assert progress["job_id"] == job["id"] and progress["job_status"] == "Completed"
    for table in ("blocks", "transactions"):
        files = sorted(table_dir(data_dir, table).iterdir())
        assert len(files) == 12 and table_dir(data_dir, table).joinpath("1105-1204.parquet") in files
        assert progress["tables"][table] == {
            "files_count": 12,
            "total_size_bytes": sum(f.stat().st_size for f in files),
            "start_block": 5,
            "current_block": 1204,
        }
    transitions = await srv.runtime.store.read(jobs_store.transitions_of, job["id"])
    assert transitions == [("Scheduled", "Running"), ("Running", "Completed")]


@on_both_stores
async def test_continuous_job_stops_through_stop_requested_and_stopping(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 50, "continuous_blocks_per_s": 2000.0})
    job = (await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": None})).json()
    assert job["descriptor"]["end_block"] is None
    await wait_for_files(srv.client, job["id"], 3)
    assert (await srv.client.get(f"/jobs/{job['id']}")).json()["status"] == "Running"

    r = await srv.client.put(f"/jobs/{job['id']}/stop")
    assert r.status_code == 200 and r.json()["status"] == "StopRequested"
    stopped = await wait_for_status(srv.client, job["id"], "Stopped")
    transitions = await srv.runtime.store.read(jobs_store.transitions_of, job["id"])
    assert transitions == [
        ("Scheduled", "Running"),
        ("Running", "StopRequested"),
        ("StopRequested", "Stopping"),
        ("Stopping", "Stopped"),
    ]
    # Idempotent on a terminal job: 200, nothing changes.
    again = await srv.client.put(f"/jobs/{job['id']}/stop")
    assert again.status_code == 200 and again.json() == stopped
    # Progress is exact once stopped: every file on disk is counted, contiguous from block 0.
    progress = (await srv.client.get(f"/jobs/{job['id']}/progress")).json()["tables"]["blocks"]
    files = list(table_dir(srv.runtime.config.data_path, "blocks").glob("*.parquet"))
    assert progress["files_count"] == len(files)
    assert query(srv.runtime.config.data_path, "SELECT count(*), max(block_num) FROM {blocks}") == [
        (progress["current_block"] + 1, progress["current_block"])
    ]


async def test_one_active_job_per_dataset_version(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 50, "continuous_blocks_per_s": 500.0})
    first = (await srv.client.post("/jobs", json={"dataset": DATASET})).json()
    r = await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 10, "end_block": 20})
    assert r.status_code == 409
    assert r.json()["error_code"] == "ACTIVE_JOB_EXISTS" and str(first["id"]) in r.json()["error_message"]
    await srv.client.put(f"/jobs/{first['id']}/stop")
    await wait_for_status(srv.client, first["id"], "Stopped")
    r = await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 10, "end_block": 20})
    assert r.status_code == 201 and r.json()["id"] > first["id"]


async def test_bad_requests_are_coded_400s(server):
    c = server.client
    cases = [
        ({"dataset": "nope/nope@1"}, "UNKNOWN_DATASET"),
        ({"dataset": "example/blocks"}, "UNKNOWN_DATASET"),
        ({"dataset": DATASET, "start_block": 10, "end_block": 9}, "INVALID_BLOCK_RANGE"),
        ({"dataset": DATASET, "start_block": -1, "end_block": 9}, "INVALID_REQUEST"),  # out of the struct's range
        ({"dataset": DATASET, "start_block": "zero"}, "INVALID_REQUEST"),
        ({"dataset": DATASET, "node_id": "worker-99"}, "INVALID_NODE_ID"),
        ({}, "INVALID_REQUEST"),
    ]
    for body, code in cases:
        r = await c.post("/jobs", json=body)
        assert r.status_code == 400 and r.json()["error_code"] == code, (body, r.text)
        assert set(r.json()) == {"error_code", "error_message"}
    assert (await c.post("/jobs", content=b"{nope")).json()["error_code"] == "MALFORMED_JSON"
    for method, path in (("GET", "/jobs/abc"), ("GET", "/jobs/1.5/progress"), ("PUT", "/jobs/-1/stop"), ("DELETE", "/jobs/x"),
                         ("GET", "/jobs/0"), ("GET", "/jobs/0/progress"), ("PUT", "/jobs/0/stop"), ("DELETE", "/jobs/0")):
        r = await c.request(method, path)
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_JOB_ID", (method, path)
    for method, path in (("GET", "/jobs/999"), ("GET", "/jobs/999/progress"), ("PUT", "/jobs/999/stop")):
        r = await c.request(method, path)
        assert r.status_code == 404 and r.json()["error_code"] == "JOB_NOT_FOUND", (method, path)
    assert (await c.get("/jobs")).json() == {"jobs": [], "next_cursor": None}


@on_both_stores
async def test_delete_rules(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 50, "continuous_blocks_per_s": 500.0})
    c = srv.client
    running = (await c.post("/jobs", json={"dataset": DATASET})).json()
    await wait_for_files(c, running["id"], 1)
    r = await c.delete(f"/jobs/{running['id']}")
    assert r.status_code == 409 and r.json()["error_code"] == "JOB_NOT_TERMINAL"
    await c.put(f"/jobs/{running['id']}/stop")
    await wait_for_status(c, running["id"], "Stopped")
    assert (await c.delete(f"/jobs/{running['id']}")).status_code == 204
    assert (await c.get(f"/jobs/{running['id']}")).status_code == 404
    assert (await c.delete(f"/jobs/{running['id']}")).status_code == 204  # absent: still 204
    # Ids come from a persisted sequence: deleting the newest job never frees its id.
    again = (await c.post("/jobs", json={"dataset": DATASET, "end_block": 49})).json()  # its first file again
    assert again["id"] == running["id"] + 1
    # The record is gone, the Parquet output is not.
    assert list(table_dir(srv.runtime.config.data_path, "blocks").glob("*.parquet"))


@on_both_stores
async def test_bulk_delete_only_touches_matching_terminal_jobs(server):
    c = server.client
    statuses = ["Completed", "Stopped", "Failed", "Running", "Scheduled", "StopRequested", "Stopping"] * 3
    rows = [(f"seed/ds{i}@1", 0, 10, "worker-01", s, 10) for i, s in enumerate(statuses)]
    await server.runtime.store.write(jobs_store.insert_jobs_bulk, rows, utcnow())

    async def remaining():
        jobs = (await c.get("/jobs?status=all&limit=1000")).json()["jobs"]
        return sorted(j["status"] for j in jobs)

    for bad in ("", "?status=", "?status=running", "?status=active", "?status=all"):
        r = await c.delete(f"/jobs{bad}")
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_STATUS", bad
    assert len(await remaining()) == 21
    assert (await c.delete("/jobs?status=COMPLETED")).status_code == 204
    assert "Completed" not in await remaining() and len(await remaining()) == 18
    assert (await c.delete("/jobs?status=error")).status_code == 204
    assert "Failed" not in await remaining()
    assert (await c.delete("/jobs?status=terminal")).status_code == 204
    assert await remaining() == sorted(["Running", "Scheduled", "StopRequested", "Stopping"] * 3)
    assert (await c.delete("/jobs?status=stopped")).status_code == 204


async def test_failing_extractor_marks_the_job_failed_with_its_message(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 100})
    job = (await srv.client.post("/jobs", json={"dataset": "test/boom@1", "start_block": 0, "end_block": 999})).json()
    failed = await wait_for_status(srv.client, job["id"], "Failed")
    assert "upstream node refused block 200" in failed["error"]
    progress = (await srv.client.get(f"/jobs/{job['id']}/progress")).json()
    assert progress["tables"]["rows"]["current_block"] == 199 and progress["tables"]["rows"]["files_count"] == 2
    # A failed job no longer blocks its dataset version.
    again = await srv.client.post("/jobs", json={"dataset": "test/boom@1", "start_block": 0, "end_block": 99})
    assert again.status_code == 201


async def test_a_dataset_raising_a_base_exception_fails_its_job_only(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 100})
    for start, raised in ((0, "SystemExit"), (1000, "KeyboardInterrupt"), (2000, "BadMessage")):
        job = (await srv.client.post("/jobs", json={"dataset": "test/halt@1", "start_block": start,
                                                    "end_block": start + 299})).json()
        failed = await wait_for_status(srv.client, job["id"], "Failed")
        said = "<BadMessage: its message could not be read>" if raised == "BadMessage" else "halted at"
        assert failed["error"].startswith(f"{raised}: {said}"), failed
    plain_job = (await srv.client.post("/jobs", json={"dataset": "test/plain@1", "start_block": 0, "end_block": 99})).json()
    assert (await wait_for_status(srv.client, plain_job["id"], "Completed", "Failed"))["status"] == "Completed"


@on_both_stores
async def test_jobs_of_an_expired_worker_move_to_a_live_one_then_fail_when_none_is_left(server_factory):
    srv = await server_factory(
        workers=[{"id": "w-a", "slots": 2}, {"id": "w-b", "slots": 2}],
        jobs={"batch_blocks": 50, "continuous_blocks_per_s": 1000.0, "worker_check_s": 0.05, "expiry_grace_s": 0.0},
    )
    live = ["w-a", "w-b"]

    async def live_workers():  # (can hold a job, live): the registry's view, or the shared table's
        return list(live), list(live)

    srv.runtime.services.jobs.placement.candidates = live_workers
    job = (await srv.client.post("/jobs", json={"dataset": DATASET, "node_id": "w-a"})).json()
    assert job["node_id"] == "w-a"
    before = await wait_for_files(srv.client, job["id"], 2)
    live.remove("w-a")

    async def moved():
        return (await srv.client.get(f"/jobs/{job['id']}")).json()["node_id"] == "w-b"

    await wait_until(moved, timeout=10)
    await wait_for_files(srv.client, job["id"], before["tables"]["blocks"]["files_count"] + 2)
    assert (await srv.client.get(f"/jobs/{job['id']}")).json()["status"] == "Running"
    live.clear()
    failed = await wait_for_status(srv.client, job["id"], "Failed")
    assert "w-b is no longer live" in failed["error"]
    r = await srv.client.post("/jobs", json={"dataset": DATASET})
    assert r.status_code == 503 and r.json()["error_code"] == "NO_LIVE_WORKER"


async def test_without_rescheduling_an_expired_workers_job_fails(server_factory):
    srv = await server_factory(
        jobs={"batch_blocks": 50, "continuous_blocks_per_s": 1000.0, "worker_check_s": 0.05,
              "expiry_grace_s": 0.0, "reschedule_on_expiry": False},
    )
    live = ["worker-01"]

    async def live_workers():  # (can hold a job, live): the registry's view, or the shared table's
        return list(live), list(live)

    srv.runtime.services.jobs.placement.candidates = live_workers
    job = (await srv.client.post("/jobs", json={"dataset": DATASET})).json()
    await wait_for_files(srv.client, job["id"], 1)
    live.clear()
    failed = await wait_for_status(srv.client, job["id"], "Failed")
    assert "reschedule_on_expiry" in failed["error"]


async def test_a_running_job_holds_one_slot_of_its_worker(server_factory):
    srv = await server_factory(
        workers=[{"id": "w-a", "slots": 3}],
        jobs={"batch_blocks": 50, "continuous_blocks_per_s": 500.0},
    )

    async def slots():
        (snap,) = await srv.runtime.services.tasks.snapshot()
        return snap

    assert (await slots()).free == 3
    job = (await srv.client.post("/jobs", json={"dataset": DATASET})).json()
    await wait_for_files(srv.client, job["id"], 1)
    snap = await slots()
    assert snap.free == 2 and f"job:{job['id']}" in snap.running
    await srv.client.put(f"/jobs/{job['id']}/stop")
    await wait_for_status(srv.client, job["id"], "Stopped")

    async def released():
        return (await slots()).free == 3

    await wait_until(released, timeout=5)


async def test_a_crashed_scheduler_restarts_and_the_running_job_still_completes_once(server_factory):
    srv = await server_factory(jobs={"batch_blocks": 20, "continuous_blocks_per_s": 2000.0})
    job = (await srv.client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 2999})).json()
    await wait_for_files(srv.client, job["id"], 2)
    await srv.runtime.services.jobs.scheduler.tell("not a message")  # crashes the actor; supervise restarts it
    done = await wait_for_status(srv.client, job["id"], "Completed", "Failed")
    assert done["status"] == "Completed"
    data_dir = srv.runtime.config.data_path
    assert query(data_dir, "SELECT count(*), count(DISTINCT block_num) FROM {blocks}") == [(3000, 3000)]
    progress = (await srv.client.get(f"/jobs/{job['id']}/progress")).json()["tables"]["blocks"]
    assert progress["files_count"] == 150


async def test_a_job_waits_scheduled_for_a_slot_and_stops_without_running(server_factory):
    srv = await server_factory(
        workers=[{"id": "solo", "slots": 1}], jobs={"batch_blocks": 50, "continuous_blocks_per_s": 1000.0}
    )
    c = srv.client
    hog = (await c.post("/jobs", json={"dataset": DATASET})).json()
    await wait_for_files(c, hog["id"], 1)
    waiting = (await c.post("/jobs", json={"dataset": "test/plain@1", "end_block": 99})).json()
    await wait_for_files(c, hog["id"], 3)  # time passes; the waiting job still has no slot
    assert (await c.get(f"/jobs/{waiting['id']}")).json()["status"] == "Scheduled"

    r = await c.put(f"/jobs/{waiting['id']}/stop")
    assert r.status_code == 200 and r.json()["status"] == "Stopped"
    assert await srv.runtime.store.read(jobs_store.transitions_of, waiting["id"]) == [
        ("Scheduled", "StopRequested"),
        ("StopRequested", "Stopped"),
    ]
    assert (await c.get(f"/jobs/{waiting['id']}/progress")).json()["tables"] == {}

    queued = (await c.post("/jobs", json={"dataset": "test/plain@1", "end_block": 99})).json()
    await c.put(f"/jobs/{hog['id']}/stop")
    assert (await wait_for_status(c, queued["id"], "Completed"))["node_id"] == "solo"


async def test_jobs_go_to_the_least_loaded_worker(server_factory):
    srv = await server_factory(
        workers=[{"id": "w-a"}, {"id": "w-b"}], jobs={"batch_blocks": 50, "continuous_blocks_per_s": 200.0}
    )
    first = (await srv.client.post("/jobs", json={"dataset": DATASET})).json()
    second = (await srv.client.post("/jobs", json={"dataset": "test/plain@1"})).json()
    assert {first["node_id"], second["node_id"]} == {"w-a", "w-b"}
    for job in (first, second):
        await srv.client.put(f"/jobs/{job['id']}/stop")
        await wait_for_status(srv.client, job["id"], "Stopped")


async def test_jobs_routes_are_in_openapi(server):
    paths = (await server.client.get("/openapi")).json()["paths"]
    assert set(paths["/jobs"]) == {"get", "post", "delete"}
    assert set(paths["/jobs/{job_id}"]) == {"get", "delete"}
    assert "put" in paths["/jobs/{job_id}/stop"] and "get" in paths["/jobs/{job_id}/progress"]
