"""The durable workers' SQL on both store backends (`any_store`: DuckDB, then PostgreSQL)."""

from amp_runtime.durable import store as sql


def worker_row(worker: str = "tpl.w1", **changes) -> sql.WorkerRow:
    fields = dict(worker=worker, template_id="tpl", name=worker.split(".")[1], template_version=1,
                  args=["a"], env={"K": "V"}, status="Idle", retry_count=0, state=b'{"n":0}')
    fields.update(changes)
    return sql.WorkerRow(**fields)


async def test_template_version_moves_only_when_the_interface_changes(any_store):
    assert await any_store.write(sql.sync_template_version, "tpl", "Tpl", "h1") == 1
    assert await any_store.write(sql.sync_template_version, "tpl", "Tpl", "h1") == 1
    assert await any_store.write(sql.sync_template_version, "tpl", "Tpl", "h2") == 2


async def test_create_is_unique_and_bounded(any_store):
    assert await any_store.write(sql.create_worker, worker_row("tpl.w1"), 2) == "ok"
    assert await any_store.write(sql.create_worker, worker_row("tpl.w1"), 2) == "exists"
    assert await any_store.write(sql.create_worker, worker_row("tpl.w2"), 2) == "ok"
    assert await any_store.write(sql.create_worker, worker_row("tpl.w3"), 2) == "full"
    assert [w.worker for w in await any_store.read(sql.list_workers)] == ["tpl.w1", "tpl.w2"]
    await any_store.write(sql.delete_worker, "tpl.w1")
    assert await any_store.read(sql.load_snapshot, "tpl.w1") is None
    assert [idx for idx, *_ in await any_store.read(sql.oplog, "tpl.w1")] == []


async def test_a_snapshot_holds_state_pending_work_keys_outcomes_and_promises(any_store):
    row = worker_row()
    await any_store.write(sql.create_worker, row, 10)
    await any_store.write(sql.add_key, row.worker, "unused-key")
    done = sql.PendingInvocation(1, "k1", "add", [1, "x"], "json")
    failed = sql.PendingInvocation(2, "k2", "add", [2], "json")
    waiting = sql.PendingInvocation(3, None, "add", [3], "json")
    for inv in (done, failed, waiting):
        await any_store.write(sql.accept_invocation, row.worker, inv)
    await any_store.write(sql.finish_invocation, row.worker, 4, 1, b"[2]", b'{"n":2}')
    await any_store.write(sql.fail_invocations, row.worker, 5, {2: "boom"}, 1, "Idle")
    await any_store.write(sql.create_promise, row.worker, 6, 3, 0)
    await any_store.write(sql.create_promise, row.worker, 7, 3, 1)
    await any_store.write(sql.complete_promise, row.worker, 8, 6, [1, 2, 255])

    snap = await any_store.read(sql.load_snapshot, row.worker)
    assert snap.row.state == b'{"n":2}' and snap.row.retry_count == 1 and snap.row.env == {"K": "V"}
    assert snap.last_idx == 8
    assert snap.pending == [waiting]
    assert snap.keys == {"k1": 1, "k2": 2, "unused-key": None}
    assert snap.outcomes == {1: (True, b"[2]"), 2: (False, b"boom")}
    assert sorted((p.idx, p.ordinal, p.completed, p.data) for p in snap.promises) == [
        (6, 0, True, [1, 2, 255]), (7, 1, False, None)
    ]
    log = await any_store.read(sql.oplog, row.worker)
    assert [(idx, kind) for idx, kind, _, _ in log] == [
        (0, "create"), (1, "invoke"), (2, "invoke"), (3, "invoke"), (4, "done"), (5, "failed"),
        (6, "promise"), (7, "promise"), (8, "complete"),
    ]
    await any_store.write(sql.set_status, row.worker, 9, "interrupt", "Interrupted", 0, {})
    assert (await any_store.read(sql.load_snapshot, row.worker)).row.status == "Interrupted"
