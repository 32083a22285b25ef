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


# -- leases: PostgreSQL only (peers); a single process on DuckDB writes none --------------
async def _pg_stores(nursery, pg_url, count):
    from amp_runtime.core.backends import store_backend
    from amp_runtime.core.store import Store

    stores = []
    for _ in range(count):
        store = Store(store_backend(pg_url, None), group_commit_ms=1)
        await store.open()
        nursery.start_soon(store.run)
        stores.append(store)
    return stores


async def test_of_peers_racing_for_a_free_lease_exactly_one_wins(nursery, pg_url):
    import trio

    stores = await _pg_stores(nursery, pg_url, 4)
    for n in range(20):
        await stores[0].write(sql.create_worker, worker_row(f"tpl.w{n}"), 100)
    taken: dict[int, list[str]] = {}

    async def claim(i):
        taken[i] = await stores[i].write(sql.claim_leases, f"peer{i}", f"http://p{i}", 30.0, ["tpl"])

    async with trio.open_nursery() as racers:
        for i in range(len(stores)):
            racers.start_soon(claim, i)
    won = sorted(w for workers in taken.values() for w in workers)
    assert won == sorted(f"tpl.w{n}" for n in range(20))  # each once, by one peer
    # A live lease stays with its owner; the owner renews it by claiming again.
    owner = next(i for i, workers in taken.items() if "tpl.w0" in workers)
    other = (owner + 1) % len(stores)
    assert await stores[other].write(sql.claim_leases, f"peer{other}", "u", 30.0, ["tpl"], "tpl.w0") == []
    assert await stores[owner].write(sql.claim_leases, f"peer{owner}", "u2", 30.0, ["tpl"], "tpl.w0") == ["tpl.w0"]
    exists, lease = await stores[other].read(sql.lease_of, "tpl.w0")
    assert exists and lease == sql.Lease(f"peer{owner}", "u2", True)
    for store in stores:
        store.close()
        await store.close_connection()


async def test_an_expired_or_released_lease_is_taken_and_a_deleted_worker_has_none(nursery, pg_url):
    (store,) = await _pg_stores(nursery, pg_url, 1)
    await store.write(sql.create_worker, worker_row("tpl.w1"), 10, ("peerA", "http://a", 0.0))  # expired at once
    await store.write(sql.create_worker, worker_row("tpl.w2"), 10, ("peerA", "http://a", 30.0))
    assert (await store.read(sql.lease_of, "tpl.w1"))[1].live is False
    assert await store.write(sql.renew_leases, "peerA", 30.0) == ["tpl.w2"]  # an expired one is not renewed
    assert await store.write(sql.claim_leases, "peerB", "http://b", 30.0, ["tpl"]) == ["tpl.w1"]
    await store.write(sql.release_leases, "peerA", ["tpl.w2"])
    assert await store.read(sql.lease_of, "tpl.w2") == (True, None)
    assert sorted(await store.write(sql.claim_leases, "peerB", "http://b", 30.0, ["tpl"])) == ["tpl.w1", "tpl.w2"]
    await store.write(sql.delete_worker, "tpl.w1")
    assert await store.read(sql.lease_of, "tpl.w1") == (False, None)
    assert await store.write(sql.claim_leases, "peerB", "http://b", 30.0, ["other"]) == []
    store.close()
    await store.close_connection()


async def test_a_fenced_write_of_a_peer_without_the_lease_writes_nothing(nursery, pg_url):
    (store,) = await _pg_stores(nursery, pg_url, 1)
    await store.write(sql.create_worker, worker_row("tpl.w1"), 10, ("peerA", "http://a", 0.0))
    inv = sql.PendingInvocation(1, None, "add", [1], "json")
    await store.write(sql.fenced, "peerA", "tpl.w1", sql.accept_invocation, inv)  # expired, but nobody took it
    assert await store.write(sql.claim_leases, "peerB", "http://b", 30.0, ["tpl"]) == ["tpl.w1"]
    try:
        await store.write(sql.fenced, "peerA", "tpl.w1", sql.finish_invocation, 2, 1, b"[1]", b'{"n":1}')
        raise AssertionError("peerA wrote without the lease")
    except sql.LeaseLost:
        pass
    snap = await store.read(sql.load_snapshot, "tpl.w1")
    assert [p.seq for p in snap.pending] == [1] and snap.row.state == b'{"n":0}'
    store.close()
    await store.close_connection()
