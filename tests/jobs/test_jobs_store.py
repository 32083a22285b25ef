"""The jobs SQL on both store backends (`any_store`: DuckDB, then PostgreSQL)."""

from datetime import datetime, timedelta

from amp_runtime.jobs import store as sql
from amp_runtime.jobs.states import TERMINAL

NOW = datetime(2026, 12, 1, 12, 0, 0, 250000)


async def test_jobs_get_increasing_ids_and_read_back_whole(any_store):
    first = await any_store.write(sql.insert_job, "ns/a@1.0.0", 0, None, "w1", 1000, NOW)
    second = await any_store.write(sql.insert_job, "ns/b@1.0.0", 5, 99, "w2", 10, NOW)
    assert second.id == first.id + 1
    assert await any_store.read(sql.get_job, first.id) == first
    assert (await any_store.read(sql.get_job, second.id)).end_block == 99
    assert await any_store.read(sql.get_job, 12345) is None


async def test_bulk_insert_and_pages_newest_first(any_store):
    rows = [("ns/a@1.0.0", i, None, "w1", "Scheduled" if i % 2 else "Completed", 100) for i in range(7)]
    ids = await any_store.write(sql.insert_jobs_bulk, rows, NOW)
    assert ids == list(range(ids[0], ids[0] + 7))
    everything = frozenset({"Scheduled", "Completed"})
    page = await any_store.read(sql.list_jobs, everything, None, 3)
    assert [r.id for r in page] == ids[::-1][:3]
    after = await any_store.read(sql.list_jobs, everything, page[-1].id, 10)
    assert [r.id for r in after] == ids[::-1][3:]
    assert [r.start_block for r in await any_store.read(sql.active_jobs)] == [1, 3, 5]
    assert await any_store.write(sql.insert_jobs_bulk, [], NOW) == []


async def test_transitions_keep_their_order_within_one_instant(any_store):
    job = await any_store.write(sql.insert_job, "ns/a@1.0.0", 0, 10, "w1", 10, NOW)
    await any_store.write(sql.set_status, job.id, "Scheduled", "Running", NOW, None)
    await any_store.write(sql.set_status, job.id, "Running", "Failed", NOW, "boom")
    await any_store.write(sql.set_status, job.id, "Failed", "Scheduled", NOW, None)  # error kept
    assert await any_store.read(sql.transitions_of, job.id) == [
        ("Scheduled", "Running"), ("Running", "Failed"), ("Failed", "Scheduled")
    ]
    record = await any_store.read(sql.get_job, job.id)
    assert (record.status, record.error) == ("Scheduled", "boom")
    await any_store.write(sql.set_node, job.id, "w1", "w9", NOW + timedelta(seconds=1))
    assert (await any_store.read(sql.get_job, job.id)).node_id == "w9"


async def test_status_and_node_changes_are_compare_and_set(any_store):
    job = await any_store.write(sql.insert_job, "ns/a@1.0.0", 0, 10, "w1", 10, NOW)
    assert await any_store.write(sql.set_status, job.id, "Scheduled", "Running", NOW, None) is True
    assert await any_store.write(sql.set_status, job.id, "Scheduled", "StopRequested", NOW, None) is False
    assert await any_store.write(sql.set_status, job.id, "Running", "Failed", NOW, "x", "w2") is False  # not its worker
    assert await any_store.write(sql.set_node, job.id, "w1", "w2", NOW) is True
    assert await any_store.write(sql.set_node, job.id, "w1", "w3", NOW) is False  # a racing peer lost
    await any_store.write(sql.set_status, job.id, "Running", "Completed", NOW, None)
    assert await any_store.write(sql.set_node, job.id, "w2", "w3", NOW) is False  # terminal jobs stay put
    record = await any_store.read(sql.get_job, job.id)
    assert (record.status, record.node_id) == ("Completed", "w2")
    assert await any_store.read(sql.transitions_of, job.id) == [("Scheduled", "Running"), ("Running", "Completed")]


async def test_progress_upserts_keep_the_latest_per_table(any_store):
    job = await any_store.write(sql.insert_job, "ns/a@1.0.0", 0, None, "w1", 10, NOW)
    await any_store.write(sql.upsert_progress, [
        sql.ProgressRow(job.id, "blocks", 1, 100, 0, 9), sql.ProgressRow(job.id, "txs", 1, 50, 0, 9)
    ], NOW)
    await any_store.write(sql.upsert_progress, [sql.ProgressRow(job.id, "blocks", 2, 200, 0, 19)], NOW)
    record, rows = await any_store.read(sql.job_with_progress, job.id)
    assert record.id == job.id
    assert rows == [sql.ProgressRow(job.id, "blocks", 2, 200, 0, 19), sql.ProgressRow(job.id, "txs", 1, 50, 0, 9)]


async def test_only_terminal_jobs_are_deleted_with_their_rows(any_store):
    live = await any_store.write(sql.insert_job, "ns/a@1.0.0", 0, None, "w1", 10, NOW)
    done = await any_store.write(sql.insert_job, "ns/a@1.0.0", 0, 5, "w1", 10, NOW)
    failed = await any_store.write(sql.insert_job, "ns/a@1.0.0", 0, 5, "w1", 10, NOW)
    await any_store.write(sql.set_status, done.id, "Scheduled", "Completed", NOW, None)
    await any_store.write(sql.set_status, failed.id, "Scheduled", "Failed", NOW, "x")
    await any_store.write(sql.upsert_progress, [sql.ProgressRow(done.id, "blocks", 1, 1, 0, 5)], NOW)
    assert await any_store.write(sql.delete_job, live.id) == "Scheduled"
    assert await any_store.write(sql.delete_job, done.id) is None
    assert await any_store.read(sql.job_with_progress, done.id) == (None, [])
    assert await any_store.read(sql.transitions_of, done.id) == []
    assert await any_store.write(sql.delete_jobs_with_status, TERMINAL) == 1
    assert [r.id for r in await any_store.read(sql.list_jobs, TERMINAL | {"Scheduled"}, None, 10)] == [live.id]


async def test_a_peer_creates_a_job_only_while_its_dataset_has_no_active_one(pg_url, tmp_path, nursery):
    from amp_runtime.core.backends import store_backend
    from amp_runtime.core.store import Store

    store = Store(store_backend(pg_url, tmp_path / "unused.duckdb"), group_commit_ms=1)
    await store.open()
    nursery.start_soon(store.run)
    try:
        first, created = await store.write(sql.insert_job_unless_active, "ns/a@1.0.0", 0, 10, "w1", 10, NOW)
        assert created
        again, created = await store.write(sql.insert_job_unless_active, "ns/a@1.0.0", 0, 20, "w2", 10, NOW)
        assert (again.id, created) == (first.id, False)
        await store.write(sql.set_status, first.id, "Scheduled", "Stopped", NOW, None)
        _, created = await store.write(sql.insert_job_unless_active, "ns/a@1.0.0", 0, 20, "w2", 10, NOW)
        assert created
    finally:
        store.close()
        await store.close_connection()
