"""The slot owner (the worker actor) through its methods and messages, without HTTP."""

import itertools

import msgspec
import pytest
import trio

from amp_runtime.config import WorkerConfig
from amp_runtime.core.actor import supervise
from amp_runtime.tasks import builtin  # noqa: F401  (echo, count)
from amp_runtime.tasks.registry import FUNCTIONS
from amp_runtime.tasks.worker import (
    Cancel, Hold, Lookup, Rejected, SetMaintenance, SlotHold, Task, Unhold, WorkerActor, WorkerFailed,
    run_leased, run_sync, wait_outcome,
)

from ..helpers import wait_until
from . import fns


def make_worker(slots=1, max_queue=100):
    return WorkerActor(WorkerConfig(id="w", slots=slots, max_queue=max_queue),
                       keep_results=100, keep_results_s=60, expose_tracebacks=False)


_ids = itertools.count()


def task(name, input, priority=None, timeout=10, mode="sync"):
    spec = FUNCTIONS[name]
    if spec.input_type is not None:  # as admission would decode it
        input = msgspec.convert(input, spec.input_type)
    return Task(f"t{next(_ids)}", spec, input, priority=priority, mode=mode, timeout_s=timeout)


async def test_priority_order_under_saturation(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    blocker = task("test_gate", {"gate": "w-block", "tag": "blocker"})
    worker.admit(blocker)
    await wait_until(lambda: blocker.status == "running")  # else it would queue behind priorities
    queued = [task("test_gate", {"gate": "w-open", "tag": f"actor:p{p}-{i}"}, priority=p)
              for i, p in enumerate([None, 10, 1, 10, 1, None, 5])]
    for t in queued:
        assert worker.admit(t, lease=True) is None  # slots busy: even a sync task queues
    assert worker.state.queued == 7 and worker.state.free == 0
    fns.gate("w-open").set()
    fns.gate("w-block").set()
    with trio.fail_after(5):
        results = [(await t.outcome.wait()).result for t in queued]
    order = [tag.removeprefix("actor:") for tag in fns.STARTED if tag.startswith("actor:")]
    assert order == ["p1-2", "p1-4", "p5-6", "p10-1", "p10-3", "pNone-0", "pNone-5"]  # FIFO within a priority
    assert sorted(r.removeprefix("actor:") for r in results) == sorted(order)


async def test_queue_full_and_maintenance_reject(nursery):
    worker = make_worker(slots=1, max_queue=1)
    await nursery.start(supervise, worker)
    running = task("test_gate", {"gate": "q-full"})
    waiting = task("test_gate", {"gate": "q-full"})
    for t in (running, waiting):
        worker.admit(t)
    with pytest.raises(Rejected) as refused:
        worker.admit(task("test_gate", {"gate": "q-full"}))
    assert refused.value.status == 429 and refused.value.code == "QUEUE_FULL"
    await worker.ask(SetMaintenance(True))
    assert worker.state.maintenance
    with pytest.raises(Rejected) as refused:
        worker.admit(task("echo", {}), lease=True)
    assert refused.value.status == 503
    fns.gate("q-full").set()
    with trio.fail_after(5):  # maintenance lets queued and running work finish
        assert (await running.outcome.wait()).status == "completed"
        assert (await waiting.outcome.wait()).status == "completed"
    worker.set_maintenance(False)
    with trio.fail_after(5):
        assert (await run_sync(worker, task("echo", {"back": 1}))).result == {"back": 1}


async def test_cancel_running_and_queued(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    stuck = task("test_gate", {"gate": "never"})
    queued = task("test_gate", {"gate": "never", "n": 2})
    after = task("echo", {"x": 1})
    for t in (stuck, queued, after):
        worker.admit(t)
    with trio.fail_after(5):
        assert await worker.ask(Cancel(queued.id)) is not None
        assert (await queued.outcome.wait()).status == "cancelled"
        await worker.ask(Cancel(stuck.id))
        assert (await stuck.outcome.wait()).status == "cancelled"
        assert (await after.outcome.wait()).result == {"x": 1}
    assert await worker.ask(Cancel(stuck.id)) is None  # finished: nothing to cancel
    assert (await worker.ask(Lookup(stuck.id))).status == "cancelled"
    assert worker.state.free == 1


async def test_timeout_is_reported(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    t = Task("slow", FUNCTIONS["test_slow"], {}, priority=None, mode="sync", timeout_s=0.05)
    worker.admit(t)
    with trio.fail_after(5):
        assert (await t.outcome.wait()).status == "timed_out"


async def test_each_running_task_times_out_at_its_own_deadline(nursery):
    """One deadline watcher per worker: a task with a nearer deadline, started while one with a
    farther deadline runs (on a slot or on a lease), times out on time; the other runs on."""
    worker = make_worker(slots=3)
    await nursery.start(supervise, worker)
    long = Task("long", FUNCTIONS["test_gate"], {"gate": "deadlines"}, priority=None, mode="sync", timeout_s=30)
    worker.admit(long)
    await wait_until(lambda: long.status == "running")
    leased = Task("leased", FUNCTIONS["test_slow"], {}, priority=None, mode="sync", timeout_s=0.2)
    short = Task("short", FUNCTIONS["test_slow"], {}, priority=None, mode="sync", timeout_s=1.0)
    lease = worker.admit(leased, lease=True)
    assert lease is not None
    worker.admit(short)
    with trio.fail_after(5):
        assert (await run_leased(worker, lease, leased)).status == "timed_out"
        assert (await short.outcome.wait()).status == "timed_out"
    assert 0.2 <= leased.duration_ms / 1000 < 0.8 and 1.0 <= short.duration_ms / 1000 < 3
    assert long.status == "running"  # its deadline is far: untouched
    fns.gate("deadlines").set()
    with trio.fail_after(5):
        assert (await long.outcome.wait()).status == "completed"


async def test_a_task_not_started_by_its_deadline_never_starts(nursery):
    worker = make_worker(slots=2)
    await nursery.start(supervise, worker)
    blocker = task("test_gate", {"gate": "late-start", "tag": "blocker"})
    worker.admit(blocker)
    await wait_until(lambda: blocker.status == "running")
    queued_late = task("test_gate", {"gate": "late-start", "tag": "actor:queued-late"}, timeout=0.1)
    leased_late = task("test_gate", {"gate": "late-start", "tag": "actor:leased-late"}, timeout=0.1)
    lease = worker.admit(leased_late, lease=True)  # the second slot, lent ...
    worker.admit(queued_late)
    await wait_until(lambda: trio.current_time() > leased_late.deadline)
    with trio.fail_after(5):  # ... but run only after its deadline
        assert (await run_leased(worker, lease, leased_late)).status == "timed_out"
        assert (await queued_late.outcome.wait()).status == "timed_out"
    fns.gate("late-start").set()
    with trio.fail_after(5):
        assert (await blocker.outcome.wait()).status == "completed"
    assert not {"actor:queued-late", "actor:leased-late"} & set(fns.STARTED)


async def test_a_task_its_caller_gives_up_on_at_the_deadline_is_timed_out_not_cancelled(nursery):
    """A function that outlives its deadline (a shielded clean-up) is still running when its caller
    (`wait_outcome`, a batch) expires it: that is its timeout (504), not a cancel (409)."""
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    stubborn = task("test_stubborn", {"s": 1.0}, timeout=0.2)
    worker.admit(stubborn)
    with trio.fail_after(10):
        result = await wait_outcome(worker, stubborn)
    assert result.status == "timed_out" and result.error.type == "Timeout", result


async def test_a_lease_only_when_a_slot_is_free_and_it_comes_back_once(nursery):
    worker = make_worker(slots=2)
    await nursery.start(supervise, worker)
    first, second, third = task("echo", {"a": 1}), task("echo", {"a": 2}), task("echo", {"a": 3})
    lease1 = worker.admit(first, lease=True)
    lease2 = worker.admit(second, lease=True)
    assert lease1 is not None and lease2 is not None
    assert worker.state.free == 0 and set(worker.running_ids()) == {first.id, second.id}
    assert worker.admit(third, lease=True) is None  # no free slot: queued, not lent
    assert worker.state.queued == 1
    assert (await run_leased(worker, lease1, first)).result == {"a": 1}
    with trio.fail_after(5):  # the lease's slot went straight to the queued task
        assert (await third.outcome.wait()).result == {"a": 3}
    worker.release(lease1)  # a second release is ignored
    assert worker.state.free == 1
    assert (await run_leased(worker, lease2, second)).result == {"a": 2}
    assert worker.state.free == 2 and worker.state.queued == 0
    assert (await worker.ask(Lookup(first.id))).status == "completed"


async def test_a_job_hold_goes_before_queued_tasks(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    blocker = task("test_gate", {"gate": "hold-block"})
    worker.admit(blocker)
    waiting = task("echo", {"w": 1}, priority=1)
    worker.admit(waiting)
    hold = SlotHold("job:1")
    await worker.ask(Hold(hold))
    fns.gate("hold-block").set()
    with trio.fail_after(5):
        await hold.granted.wait()
    assert waiting.status == "queued" and "job:1" in worker.running_ids()
    await worker.tell(Unhold(hold))
    with trio.fail_after(5):
        assert (await waiting.outcome.wait()).result == {"w": 1}


async def served_again(worker, input):
    """The worker's answer once it serves again after a failure (it restarts on its own)."""
    with trio.fail_after(5):
        while True:
            try:
                return (await run_sync(worker, task("echo", input))).result
            except WorkerFailed:
                await trio.sleep(0.01)


def break_bookkeeping(monkeypatch, message):
    """`_record` raises for a task whose input has "boom"."""
    intact = WorkerActor._record

    def record(self, t):
        if isinstance(t.input, dict) and t.input.get("boom"):
            raise RuntimeError(message)
        intact(self, t)

    monkeypatch.setattr(WorkerActor, "_record", record)


async def test_a_failing_slot_answers_everyone_and_the_worker_starts_again(nursery, monkeypatch):
    worker = make_worker(slots=2, max_queue=10)
    await nursery.start(supervise, worker)
    breaking = task("test_gate", {"gate": "crash-open", "boom": True})
    stream = task("count", {"n": 1_000_000, "delay_ms": 10}, mode="stream")
    queued = [task("echo", {"q": i}) for i in range(3)]
    for t in (breaking, stream, *queued):
        worker.admit(t)
    hold = SlotHold("job:9")
    await worker.tell(Hold(hold))
    await wait_until(lambda: breaking.status == "running" and stream.status == "running")
    break_bookkeeping(monkeypatch, "bookkeeping broke")
    fns.gate("crash-open").set()  # the slot finishing `breaking` breaks: the worker fails
    with trio.fail_after(5):
        assert (await breaking.outcome.wait()).status == "completed"  # it did finish
        for t in (stream, *queued):
            result = await t.outcome.wait()
            assert result.status == "failed" and result.error.type == "WorkerFailed"
            assert "bookkeeping broke" in result.error.message
        await hold.granted.wait()
    assert isinstance(hold.failure, WorkerFailed)
    assert worker.state.free == 2 and worker.state.queued == 0  # rebuilt from nothing
    assert await served_again(worker, {"again": 1}) == {"again": 1}


async def test_a_crash_in_bookkeeping_during_release_fails_the_worker_not_the_caller(nursery, monkeypatch):
    worker = make_worker(slots=2)
    await nursery.start(supervise, worker)
    waiting_on = task("test_gate", {"gate": "release-crash"})
    worker.admit(waiting_on)
    break_bookkeeping(monkeypatch, "injected")
    with trio.fail_after(5):
        result = await run_sync(worker, task("echo", {"boom": True}))  # leased: its release breaks
        assert result.status == "completed"  # the caller keeps its true answer
        failed = await waiting_on.outcome.wait()
    assert failed.status == "failed" and "injected" in failed.error.message
    assert await served_again(worker, {"ok": 1}) == {"ok": 1}


async def test_a_settled_task_looks_as_it_did_while_its_record_was_live(nursery):
    """The history keeps settled tasks encoded: a lookup answers, field by field, what the task's
    own view answered when it settled (typed results, errors, priorities, webhook deliveries)."""
    from amp_runtime.tasks.models import Delivery, Webhook
    from amp_runtime.tasks.worker import RecordDelivery

    worker = WorkerActor(WorkerConfig(id="w", slots=2, max_queue=10),
                         keep_results=100, keep_results_s=60, expose_tracebacks=True)
    await nursery.start(supervise, worker)
    tasks = [task("test_typed_result", {"area": 6}), task("test_typed_result", {"note": "n"}, priority=3),
             task("fail", {"message": "nope"}), task("echo", {"x": [1, 2.5, None]}, priority=7),
             task("test_slow", {}, timeout=0.05), task("count", {"n": 2}, mode="stream"),
             Task("hooked", FUNCTIONS["echo"], {"w": 1}, priority=None, mode="webhook", timeout_s=5,
                  webhook=Webhook(url="http://127.0.0.1:9/hook"))]
    for t in tasks:
        worker.admit(t)
    cancelled = task("test_gate", {"gate": "lookup-never"})
    worker.admit(cancelled)
    worker.cancel(cancelled.id)
    tasks.append(cancelled)
    with trio.fail_after(5):
        while tasks[5].items_recv is not None and (await _drain(tasks[5])):
            pass
        for t in tasks:
            await t.outcome.wait()
    assert tasks[2].error.traceback  # exposed: kept too
    for t in tasks:
        assert msgspec.json.encode(await worker.ask(Lookup(t.id))) == msgspec.json.encode(t.view()), t.id
    hooked = tasks[6]
    first = Delivery(attempt=1, at="2026-01-01T00:00:00.000000Z", status_code=500)
    second = Delivery(attempt=2, at="2026-01-01T00:00:01.000000Z", error="ConnectError: refused")
    await worker.tell(RecordDelivery(hooked.id, first))
    await worker.tell(RecordDelivery(hooked.id, second, "failed"))
    view = await worker.ask(Lookup(hooked.id))
    assert (view.webhook_status, view.deliveries) == ("failed", [first, second])
    assert view.result == {"w": 1} and view.webhook_url == "http://127.0.0.1:9/hook"


async def _drain(stream_task) -> bool:
    try:
        await stream_task.items_recv.receive()
        return True
    except trio.EndOfChannel:
        return False


async def test_settled_tasks_are_kept_within_keep_results_and_keep_results_s(nursery):
    worker = WorkerActor(WorkerConfig(id="w", slots=1, max_queue=10),
                         keep_results=3, keep_results_s=0.5, expose_tracebacks=False)
    await nursery.start(supervise, worker)
    done = [task("echo", {"i": i}) for i in range(4)]
    with trio.fail_after(5):
        for t in done:
            assert (await run_sync(worker, t)).status == "completed"
    assert await worker.ask(Lookup(done[0].id)) is None  # over keep_results: the oldest goes
    assert [(await worker.ask(Lookup(t.id))).result for t in done[1:]] == [{"i": 1}, {"i": 2}, {"i": 3}]
    await wait_until(lambda: trio.current_time() > done[-1].finished_mono + 0.5)
    # Past keep_results_s, gone from lookups even while no other task settles (which prunes).
    assert [await worker.ask(Lookup(t.id)) for t in done] == [None] * 4
    late = task("echo", {"i": 4})
    with trio.fail_after(5):
        await run_sync(worker, late)
    assert [await worker.ask(Lookup(t.id)) for t in done] == [None] * 4  # past keep_results_s
    assert (await worker.ask(Lookup(late.id))).result == {"i": 4}


async def test_deadlines_hold_after_the_worker_starts_again(nursery, monkeypatch):
    """The deadline watcher is rebuilt with the worker: tasks of the new generation, leased or
    queued, time out on time."""
    worker = make_worker(slots=2)
    await nursery.start(supervise, worker)
    break_bookkeeping(monkeypatch, "injected")
    with trio.fail_after(5):
        await run_sync(worker, task("echo", {"boom": True}))  # its release fails the worker
    monkeypatch.undo()
    assert await served_again(worker, {"ok": 1}) == {"ok": 1}
    long = task("test_gate", {"gate": "restart-deadlines"}, timeout=30)
    worker.admit(long)
    await wait_until(lambda: long.status == "running")
    leased, queued = task("test_slow", {}, timeout=0.3), task("test_slow", {}, timeout=0.6)
    lease = worker.admit(leased, lease=True)
    assert lease is not None
    with trio.fail_after(5):
        assert (await run_leased(worker, lease, leased)).status == "timed_out"
        worker.admit(queued)
        assert (await queued.outcome.wait()).status == "timed_out"
    assert leased.duration_ms < 1500 and queued.duration_ms < 1500
    fns.gate("restart-deadlines").set()
    with trio.fail_after(5):
        assert (await long.outcome.wait()).status == "completed"


async def test_a_stream_task_times_out_while_its_reader_reads(nursery):
    worker = make_worker(slots=2)
    await nursery.start(supervise, worker)
    endless = task("test_endless", {}, timeout=0.3, mode="stream")
    worker.admit(endless)
    with trio.fail_after(5):
        items = [item async for item in endless.items_recv]  # ends when the task is settled
        assert (await endless.outcome.wait()).status == "timed_out"
    assert items and 0.3 <= endless.duration_ms / 1000 < 2


async def test_a_thread_function_times_out_at_its_deadline(nursery):
    """A plain `def` runs in a thread: at its deadline the task is settled (the thread abandoned)."""
    worker = make_worker(slots=2)
    await nursery.start(supervise, worker)
    leased, queued = task("test_slow_thread", {}, timeout=0.2), task("test_slow_thread", {}, timeout=0.4)
    lease = worker.admit(leased, lease=True)
    worker.admit(queued)
    with trio.fail_after(2.5):  # well before the threads finish
        assert (await run_leased(worker, lease, leased)).status == "timed_out"
        assert (await queued.outcome.wait()).status == "timed_out"


async def test_a_function_whose_call_fails_fails_its_task_only(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    leased = task("test_no_param", {})
    blocker, queued = task("test_gate", {"gate": "no-param"}), task("test_no_param", {})
    with trio.fail_after(5):
        assert (await run_sync(worker, leased)).error.type == "TypeError"
        worker.admit(blocker)
        worker.admit(queued)  # runs on a slot task once the blocker is done
        fns.gate("no-param").set()
        assert (await queued.outcome.wait()).error.type == "TypeError"
        assert (await blocker.outcome.wait()).status == "completed"  # the worker did not fail
    assert (await run_sync(worker, task("echo", {"after": 1}))).result == {"after": 1}


async def test_run_now_runs_a_function_without_an_await_point_on_a_free_slot_only(nursery):
    """`run_now` settles, keeps and counts the task as `release` does a leased run's (its start is
    its admission); with no free slot it runs nothing and records nothing (the caller then queues
    the task through `admit`)."""
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    done = worker.run_now(FUNCTIONS["test_no_await"], {"n": 2}, "now-1", 3)
    assert (done.id, done.status, done.result, done.error) == ("now-1", "completed", {"n": 2, "twice": 4}, None)
    view = await worker.ask(Lookup("now-1"))
    assert (view.status, view.mode, view.worker, view.priority, view.result) == ("completed", "sync", "w", 3, done.result)
    assert view.duration_ms == done.duration_ms and view.started_at == view.created_at <= view.finished_at
    failed = worker.run_now(FUNCTIONS["test_no_param"], {}, "now-2", None)  # a wrong signature
    assert (failed.status, failed.error.type) == ("failed", "TypeError")
    assert (await worker.ask(Lookup("now-2"))).error.type == "TypeError"
    assert worker.outcomes[("test_no_await", "sync", "completed")] == 1
    assert worker.outcomes[("test_no_param", "sync", "failed")] == 1
    assert worker.state.free == 1 and worker.running_ids() == []
    holder = task("test_gate", {"gate": "run-now"})
    worker.admit(holder)
    await wait_until(lambda: holder.status == "running")
    assert worker.run_now(FUNCTIONS["test_no_await"], {"n": 1}, "now-3", None) is None
    assert await worker.ask(Lookup("now-3")) is None and ("test_no_await", "sync", "completed") in worker.outcomes
    assert worker.outcomes[("test_no_await", "sync", "completed")] == 1
    fns.gate("run-now").set()
    with trio.fail_after(5):
        await holder.outcome.wait()
    worker.set_maintenance(True)
    with pytest.raises(Rejected) as refused:
        worker.run_now(FUNCTIONS["test_no_await"], {"n": 1}, "now-4", None)
    assert refused.value.status == 503 and await worker.ask(Lookup("now-4")) is None


async def test_run_now_keeps_a_task_whose_function_raises_a_base_exception(nursery):
    """A SystemExit or KeyboardInterrupt fails its task with its own type; the worker goes on."""
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    answer = worker.run_now(FUNCTIONS["test_halt"], {}, "now-halt", None)
    assert (answer.status, answer.error.type) == ("failed", "Halt")
    view = await worker.ask(Lookup("now-halt"))
    assert (view.status, view.error.type) == ("failed", "Halt")
    assert worker.outcomes[("test_halt", "sync", "failed")] == 1 and worker.state.free == 1


async def test_an_error_that_cannot_be_worded_fails_its_task_only(nursery):
    """An exception whose `str()` raises, run at once or queued on a slot task: its task fails
    with a stand-in message, and the worker goes on (a slot task used to fail its worker)."""
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    unworded = {"type": "Unwordable", "message": "<Unwordable: its message could not be read>"}
    now = worker.run_now(FUNCTIONS["test_unwordable"], {}, "now-unworded", None)
    assert {"type": now.error.type, "message": now.error.message} == unworded
    blocker, queued = task("test_gate", {"gate": "unworded"}), task("test_unwordable", {})
    worker.admit(blocker)
    worker.admit(queued)
    fns.gate("unworded").set()
    with trio.fail_after(5):
        failed = await queued.outcome.wait()
        assert (await blocker.outcome.wait()).status == "completed"
    assert {"type": failed.error.type, "message": failed.error.message} == unworded
    assert (await run_sync(worker, task("echo", {"after": 1}))).result == {"after": 1}


async def test_run_now_answers_for_its_own_code_breaking(nursery, monkeypatch):
    """Our code around the function breaking (not the function) fails the task as WorkerFailed,
    kept and counted, as `run_leased` does."""
    from amp_runtime.tasks import running as running_module

    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)

    def broken(*args):
        raise RuntimeError("the runner broke")

    monkeypatch.setattr(running_module, "call_now", broken)
    answer = worker.run_now(FUNCTIONS["test_no_await"], {"n": 1}, "now-runner", None)
    assert (answer.status, answer.error.type) == ("failed", "WorkerFailed") and "the runner broke" in answer.error.message
    assert (await worker.ask(Lookup("now-runner"))).error.type == "WorkerFailed"
    assert worker.outcomes[("test_no_await", "sync", "failed")] == 1


async def test_run_now_books_that_break_fail_the_worker_not_the_answer(nursery, monkeypatch):
    """As with `release`: the caller keeps its settled answer; the worker fails and restarts."""
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)

    def broken(*args):
        raise RuntimeError("the books broke")

    monkeypatch.setattr(worker._history, "keep", broken)
    answer = worker.run_now(FUNCTIONS["test_no_await"], {"n": 5}, "now-broken", None)
    assert (answer.status, answer.result) == ("completed", {"n": 5, "twice": 10})
    with pytest.raises(WorkerFailed):
        worker.run_now(FUNCTIONS["test_no_await"], {"n": 6}, "now-refused", None)
    monkeypatch.undo()
    assert await served_again(worker, {"ok": 1}) == {"ok": 1}  # restarted from nothing by its supervisor
    answer = worker.run_now(FUNCTIONS["test_no_await"], {"n": 7}, "now-after", None)
    assert answer.result == {"n": 7, "twice": 14}


def test_a_function_timeout_must_be_positive():
    """A task must get a chance to start: a run-at-once function would otherwise run past it."""
    import amp_runtime

    for timeout in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout_s must be positive"):
            amp_runtime.function(name="test_no_time", timeout_s=timeout)
    assert "test_no_time" not in FUNCTIONS


async def _agen():
    yield 1


class _AsyncCallable:
    async def __call__(self, input):
        return input


def test_only_an_async_def_without_an_await_point_counts_as_never_suspending():
    import functools

    from amp_runtime.tasks.registry import may_suspend

    async def returns(input):
        return {"x": [input, len(str(input))]}

    async def raises(input):
        raise ValueError(input)

    async def awaits(input):
        await trio.sleep(0)

    async def awaits_in_a_branch(input):
        if input:
            return input
        await trio.lowlevel.checkpoint()

    async def async_with(input):
        async with trio.open_nursery():
            return input

    async def async_for(input):
        async for item in _agen():
            return item

    async def async_comprehension(input):
        return [item async for item in _agen()]

    async def await_in_comprehension(input):
        return [await trio.sleep(0) for _ in range(2)]

    @functools.wraps(returns)
    async def wrapper(input):
        return await returns(input)

    def plain(input):
        return input

    assert not may_suspend(returns) and not may_suspend(raises)
    assert not FUNCTIONS["echo"].suspends and FUNCTIONS["sleep"].suspends
    for fn in (awaits, awaits_in_a_branch, async_with, async_for, async_comprehension, await_in_comprehension,
               wrapper, plain, _AsyncCallable(), functools.partial(returns), lambda input: returns(input)):
        assert may_suspend(fn), fn
