"""The task journal against a real store (no HTTP), on each backend: what a restart finds."""

import time

import pytest
import trio

from amp_runtime.core.backends import store_backend
from amp_runtime.core.store import Store
from amp_runtime.tasks.journal import AcceptedTask, TaskJournal
from amp_runtime.tasks.models import TaskError, TaskResult


async def open_store(nursery, path, store_url=""):
    store = Store(store_backend(store_url, path), group_commit_ms=5)
    await store.open()
    nursery.start_soon(store.run)
    return store


async def close_store(store):
    store.close()
    await store.close_connection()


@pytest.fixture
async def journal(any_store):
    yield TaskJournal(any_store)


def accepted(task_id: str, **extra) -> AcceptedTask:
    fields = dict(id=task_id, function="hello", input={"name": "J", "n": [1, 2]}, priority=3,
                  webhook_url="http://127.0.0.1:9/hook", webhook_headers={"X-A": "1"}, timeout_s=5.0,
                  worker=None, group="default", created_at=time.time())
    fields.update(extra)
    return AcceptedTask(**fields)


async def test_concurrent_accepts_share_commits(journal):
    before = journal.store.stats.transactions
    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(journal.accept, accepted(f"t{i}"))
    recovered = await journal.recover(keep_s=3600)
    assert sorted(t.id for t in recovered.to_run) == sorted(f"t{i}" for i in range(200))
    assert journal.store.stats.transactions - before < 50  # group commit, not one per task
    first = next(t for t in recovered.to_run if t.id == "t0")
    assert first.input == {"name": "J", "n": [1, 2]} and first.webhook_headers == {"X-A": "1"}
    assert first.priority == 3 and first.timeout_s == 5.0 and first.group == "default"


async def test_lifecycle_across_a_reopen(nursery, tmp_path, store_url):
    path = tmp_path / "j.duckdb"
    store = await open_store(nursery, path, store_url)
    journal = TaskJournal(store)
    await journal.accept(accepted("run-again", idempotency_key="k1", request_fingerprint="f1"))
    await journal.accept(accepted("deliver-again"))
    await journal.accept(accepted("done"))
    await journal.accept(accepted("finished-only"))  # the process died before attempt 1 went out
    await journal.finish(TaskResult(id="finished-only", status="completed", success=True, result=1))
    await journal.accept(accepted("refused"))
    await journal.forget("refused")
    await journal.finish(TaskResult(id="deliver-again", status="failed", success=False,
                                           error=TaskError(type="E", message="m"), duration_ms=1.5))
    await journal.begin_attempt("deliver-again", 1, time.time())
    await journal.record_attempt("deliver-again", 1, status_code=500, error=None, final_status=None)
    await journal.begin_attempt("deliver-again", 2, time.time())  # the process dies during it
    await journal.finish(TaskResult(id="done", status="completed", success=True, result={"x": 1}))
    await journal.finish(TaskResult(id="done", status="completed", success=True, result=2))  # not the first
    await journal.begin_attempt("done", 1, time.time())
    await journal.record_attempt("done", 1, status_code=200, error=None, final_status="delivered")
    await close_store(store)

    store = await open_store(nursery, path, store_url)
    journal = TaskJournal(store)
    recovered = await journal.recover(keep_s=3600)
    assert [t.id for t in recovered.to_run] == ["run-again"]
    pending, finished_only = sorted(recovered.to_deliver, key=lambda p: p.task_id)
    assert pending.task_id == "deliver-again" and pending.next_attempt == 3 and pending.failures == 1
    # The outcome row reserved attempt 1: the number may be skipped, never reused.
    assert finished_only.task_id == "finished-only" and finished_only.next_attempt == 2
    assert finished_only.failures == 0 and finished_only.body.result == 1
    assert pending.body.status == "failed" and pending.body.error.message == "m"
    assert pending.headers == {"X-A": "1"} and pending.url == "http://127.0.0.1:9/hook"
    assert [(k.key, k.fingerprint, k.task_id) for k in recovered.keys] == [("k1", "f1", "run-again")]

    view = await journal.get("done")
    assert view.status == "completed" and view.result == {"x": 1} and view.webhook_status == "delivered"
    assert [(d.attempt, d.status_code) for d in view.deliveries] == [(1, 200)]
    assert view.mode == "webhook" and view.created_at.endswith("Z") and view.finished_at
    assert (await journal.get("run-again")).status == "queued"
    assert await journal.get("refused") is None and await journal.get("nope") is None
    await close_store(store)


async def test_recover_prunes_settled_tasks_past_retention(journal):
    old = time.time() - 7200
    await journal.accept(accepted("old", created_at=old, idempotency_key="old-key", request_fingerprint="f"))
    await journal.finish(TaskResult(id="old", status="completed", success=True), finished_at=old)
    await journal.begin_attempt("old", 1, old)
    await journal.record_attempt("old", 1, status_code=200, error=None, final_status="delivered")
    await journal.accept(accepted("old-undelivered", created_at=old))
    await journal.finish(TaskResult(id="old-undelivered", status="completed", success=True), finished_at=old)
    recovered = await journal.recover(keep_s=3600)
    assert recovered.pruned == 1 and recovered.keys == []
    assert await journal.get("old") is None
    assert [p.task_id for p in recovered.to_deliver] == ["old-undelivered"]  # never pruned while owed
    assert await journal.store.execute("SELECT count(*) FROM webhook_deliveries") == [(0,)]


async def test_headers_of_a_settled_task_are_dropped_even_if_the_process_died_before_forgetting_them(journal):
    for task_id in ("settled", "pending"):
        await journal.accept(accepted(task_id, webhook_headers={"X-Api-Key": "tok"}))
        await journal.finish(TaskResult(id=task_id, status="completed", success=True, result=1))
    # `settled`'s last attempt was recorded, then the process died before `forget_headers`.
    await journal.record_attempt("settled", 1, status_code=200, error=None, final_status="delivered")
    await journal.record_attempt("pending", 1, status_code=500, error=None, final_status=None)
    recovered = await journal.recover(keep_s=3600)
    assert [(p.task_id, p.headers) for p in recovered.to_deliver] == [("pending", {"X-Api-Key": "tok"})]
    rows = await journal.store.execute("SELECT id, webhook_headers FROM webhook_tasks ORDER BY id")
    assert rows == [("pending", '{"X-Api-Key":"tok"}'), ("settled", "{}")]
