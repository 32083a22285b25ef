"""The store on both backends: `store_url` is "" (DuckDB in tmp_path) or a fresh PostgreSQL database."""

import subprocess
import sys

import pytest
import trio

from amp_runtime.core.backends import store_backend
from amp_runtime.core.store import Store, StoreError

# The error a statement on a missing table raises, per backend.
MISSING_TABLE_ERROR = {"duckdb": "CatalogException", "postgres": "UndefinedTable"}


def backend_name(url: str) -> str:
    return "postgres" if url else "duckdb"


def insert_row(conn, k: int, v: str) -> None:
    conn.execute("INSERT INTO t VALUES (?, ?)", [k, v])


@pytest.fixture
async def store(nursery, tmp_path, store_url):
    store = Store(store_backend(store_url, tmp_path / "s.duckdb"), group_commit_rows=500, group_commit_ms=5)
    await store.open()
    nursery.start_soon(store.run)
    await store.write(lambda c: c.execute("CREATE TABLE t (k BIGINT, v VARCHAR)"))
    yield store
    store.close()
    await store.close_connection()


async def test_migrations_applied_once(tmp_path, store_url):
    first = Store(store_backend(store_url, tmp_path / "m.duckdb"))
    await first.open()
    assert first.applied_migrations  # a fresh file gets every migration
    await first.close_connection()
    second = Store(store_backend(store_url, tmp_path / "m.duckdb"))
    await second.open()
    assert second.applied_migrations == []
    await second.close_connection()


async def test_group_commit_gathers_many_callers_into_few_transactions(store):
    before = store.stats.transactions
    async with trio.open_nursery() as nursery:
        for i in range(1000):
            nursery.start_soon(store.write, insert_row, i, f"v{i}")
    rows = await store.execute("SELECT count(*), sum(k) FROM t")
    assert rows == [(1000, sum(range(1000)))]
    assert store.stats.transactions - before <= 50


async def test_a_failing_write_fails_only_its_caller(store, store_url):
    results = {}

    async def good(i):
        await store.write(insert_row, i, "ok")
        results[i] = "ok"

    async def bad():
        try:
            await store.write(lambda c: c.execute("INSERT INTO missing_table VALUES (1)"))
        except Exception as exc:
            results["bad"] = type(exc).__name__

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(good, i)
        nursery.start_soon(bad)
    assert sum(1 for v in results.values() if v == "ok") == 20
    assert results["bad"] == MISSING_TABLE_ERROR[backend_name(store_url)]
    assert await store.execute("SELECT count(*) FROM t") == [(20,)]


async def test_a_row_queued_now_commits_no_later_than_a_write_asked_for_after_it(store):
    """`append_soon` queues its row before it returns: a webhook task's outcome is durable once
    the next task's run is, so a next task that ends the process cannot make the first run again."""
    for i in range(20):
        committed = store.append_soon("t", ("k", "v"), (i, "queued first"))
        await store.write(insert_row, 1000 + i, "asked for after")
        assert await store.execute("SELECT v FROM t WHERE k = ?", [i]) == [("queued first",)]
        await committed()


async def test_write_returns_the_functions_result(store):
    assert await store.write(lambda c: c.execute("INSERT INTO t VALUES (1, 'a') RETURNING k").fetchall()) == [(1,)]


async def test_store_creates_its_directory_and_names_one_it_cannot_create(tmp_path):
    store = Store(tmp_path / "x" / "y.duckdb")
    await store.open()
    await store.close_connection()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("file")
    with pytest.raises(StoreError, match="cannot create data dir"):
        await Store(blocker / "z.duckdb").open()


async def test_second_store_on_the_same_file_is_refused(tmp_path):
    # DuckDB's file lock is per process: the second store has to be another process.
    path = tmp_path / "locked.duckdb"
    second = ("import pathlib, trio; from amp_runtime.core.store import Store; "
              f"trio.run(Store(pathlib.Path({str(path)!r})).open)")
    store = Store(path)
    await store.open()
    try:
        done = await trio.to_thread.run_sync(
            lambda: subprocess.run([sys.executable, "-c", second], capture_output=True, text=True, timeout=60))
    finally:
        await store.close_connection()
    assert done.returncode != 0
    assert "StoreError" in done.stderr and "in use by another process" in done.stderr, done.stderr
