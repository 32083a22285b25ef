"""The worker actor through its messages, without HTTP."""

import trio

from amp_runtime.config import WorkerConfig
from amp_runtime.core.actor import supervise
from amp_runtime.tasks.registry import FUNCTIONS
from amp_runtime.tasks.worker import Cancel, Rejected, SetMaintenance, Submit, Task, WorkerActor

from ..helpers import wait_until
from . import fns


def make_worker(slots=1, max_queue=100):
    return WorkerActor(WorkerConfig(id="w", slots=slots, max_queue=max_queue),
                       keep_results=100, keep_results_s=60, expose_tracebacks=False)


def task(name, input, priority=None, timeout=10):
    return Task(f"t{id(input)}", FUNCTIONS[name], input, priority=priority, mode="sync", timeout_s=timeout)


async def test_priority_order_under_saturation(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    blocker = task("test_gate", {"gate": "w-block", "tag": "blocker"})
    await worker.tell(Submit(blocker))
    await wait_until(lambda: blocker.status == "running")  # else it would queue behind priorities
    queued = [task("test_gate", {"gate": "w-open", "tag": f"actor:p{p}-{i}"}, priority=p)
              for i, p in enumerate([None, 10, 1, 10, 1, None, 5])]
    for t in queued:
        await worker.tell(Submit(t))
    fns.gate("w-open").set()
    fns.gate("w-block").set()
    with trio.fail_after(5):
        results = [(await t.outcome.wait()).result for t in queued]
    order = [tag.removeprefix("actor:") for tag in fns.STARTED if tag.startswith("actor:")]
    assert order == ["p1-2", "p1-4", "p5-6", "p10-1", "p10-3", "pNone-0", "pNone-5"]
    results = [r.removeprefix("actor:") for r in results]
    assert sorted(results) == sorted(order)


async def test_queue_full_and_maintenance_reject(nursery):
    worker = make_worker(slots=1, max_queue=1)
    await nursery.start(supervise, worker)
    running = task("test_gate", {"gate": "q-full"})
    waiting = task("test_gate", {"gate": "q-full"})
    refused = task("test_gate", {"gate": "q-full"})
    for t in (running, waiting):
        await worker.tell(Submit(t))
    await worker.tell(Submit(refused))
    try:
        await refused.outcome.wait()
        raise AssertionError("expected a rejection")
    except Rejected as exc:
        assert exc.status == 429
    await worker.ask(SetMaintenance(True))
    late = task("echo", {})
    await worker.tell(Submit(late))
    try:
        await late.outcome.wait()
        raise AssertionError("expected a rejection")
    except Rejected as exc:
        assert exc.status == 503
    fns.gate("q-full").set()
    with trio.fail_after(5):
        assert (await running.outcome.wait()).status == "completed"
        assert (await waiting.outcome.wait()).status == "completed"


async def test_cancel_running_frees_the_slot(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    stuck = task("test_gate", {"gate": "never"})
    await worker.tell(Submit(stuck))
    await worker.tell(Submit(after := task("echo", {"x": 1})))
    outcome = None
    with trio.fail_after(5):
        while outcome is None:  # the slot may not have picked it up yet
            outcome = await worker.ask(Cancel(stuck.id))
            await trio.lowlevel.checkpoint()
        assert (await stuck.outcome.wait()).status == "cancelled"
        assert (await after.outcome.wait()).result == {"x": 1}


async def test_timeout_is_reported(nursery):
    worker = make_worker(slots=1)
    await nursery.start(supervise, worker)
    t = Task("slow", FUNCTIONS["test_slow"], {}, priority=None, mode="sync", timeout_s=0.05)
    await worker.tell(Submit(t))
    with trio.fail_after(5):
        assert (await t.outcome.wait()).status == "timed_out"
