"""The instance actor through its messages, on a real store, without HTTP."""

import pytest
import trio

from amp_runtime.core.actor import supervise
from amp_runtime.core.store import Store
from amp_runtime.durable import builtin  # noqa: F401  registers approval
from amp_runtime.durable import store as sql
from amp_runtime.durable.instance import Instance
from amp_runtime.durable.messages import Complete, Describe, InstanceEnv, Interrupt, Invoke, NewKey, worker_key
from amp_runtime.durable.models import WorkerError
from amp_runtime.durable.templates import by_id, template_id_for

from ..helpers import wait_until
from .templates_for_tests import GATES, STEPS

GATED = by_id(template_id_for("test-gated"))
APPROVAL = by_id(template_id_for("approval"))


@pytest.fixture
async def store(nursery, tmp_path):
    store = Store(tmp_path / "s.duckdb", group_commit_ms=1)
    await store.open()
    nursery.start_soon(store.run)
    yield store
    store.close()
    await store.close_connection()


@pytest.fixture(autouse=True)
def clean_steps():
    STEPS.clear()
    GATES.clear()


async def start(nursery, store, spec, name="w", max_retries=0):
    row = sql.WorkerRow(worker_key(spec.template_id, name), spec.template_id, name, 1, [], {}, "Idle", 0,
                        spec.encode_state(spec.new_object(None)))
    await store.write(sql.create_worker, row, 100)
    return await restart(nursery, store, spec, name, max_retries)


async def restart(nursery, store, spec, name="w", max_retries=0):
    instance = Instance(spec, name, InstanceEnv(store, max_retries, 0.0, lambda outcome: None))
    await nursery.start(supervise, instance)
    return instance


async def status_of(instance):
    return (await instance.ask(Describe()))[0]


async def test_invocations_run_one_at_a_time_in_arrival_order(nursery, store):
    instance = await start(nursery, store, GATED)
    GATES["a"] = trio.Event()
    for tag in "abc":
        await instance.ask(Invoke("step", [tag], wait=False))
    await wait_until(lambda: STEPS == ["start a"])
    assert await status_of(instance) == "Running"
    GATES["a"].set()
    outcome = await instance.ask(Invoke("step", ["d"]))
    assert outcome.ok and outcome.payload == b'[["a","b","c","d"]]'
    assert STEPS == ["start a", "end a", "start b", "end b", "start c", "end c", "start d", "end d"]
    assert await status_of(instance) == "Idle"


async def test_interrupt_rolls_back_and_the_next_use_reruns_it_first(nursery, store):
    instance = await start(nursery, store, GATED)
    GATES["a"] = trio.Event()
    await instance.ask(Invoke("step", ["a"], wait=False))
    await wait_until(lambda: STEPS == ["start a"])
    assert await instance.ask(Interrupt()) is True
    assert await status_of(instance) == "Interrupted"
    assert await instance.ask(Interrupt()) is True  # again: not an error
    GATES["a"].set()
    outcome = await instance.ask(Invoke("step", ["b"]))
    # "a" ran again from the recorded (empty) state, before "b"; the cancelled run left nothing.
    assert outcome.payload == b'[["a","b"]]'
    assert STEPS == ["start a", "start a", "end a", "start b", "end b"]


async def test_a_restarted_instance_runs_unfinished_work_before_new(nursery, store):
    async with trio.open_nursery() as doomed:  # cancelled below: the process "dies"
        first = await start(doomed, store, GATED)
        await first.ask(Invoke("step", ["a"]))
        GATES["b"] = trio.Event()
        await first.ask(Invoke("step", ["b"], wait=False))
        await first.ask(Invoke("step", ["c"], wait=False))
        await wait_until(lambda: STEPS[-1] == "start b")
        doomed.cancel_scope.cancel()  # b and c were accepted, not finished
    GATES.clear()
    STEPS.clear()
    second = await restart(nursery, store, GATED)
    outcome = await second.ask(Invoke("step", ["d"]))
    assert outcome.payload == b'[["a","b","c","d"]]'
    assert STEPS == ["start b", "end b", "start c", "end c", "start d", "end d"]


async def test_keys_promises_and_their_errors(nursery, store):
    instance = await start(nursery, store, APPROVAL)
    with pytest.raises(WorkerError) as err:
        await instance.ask(Invoke("request", ["x"], key="nope"))
    assert err.value.status == 400
    key = await instance.ask(NewKey())
    results = []

    async def caller():
        results.append(await instance.ask(Invoke("request", ["x"], key=key)))

    async with trio.open_nursery() as callers:
        callers.start_soon(caller)
        callers.start_soon(caller)
        await wait_until(lambda: instance.promises and instance.status == "Suspended")
        (promise,) = instance.promises
        with pytest.raises(WorkerError) as err:
            await instance.ask(Complete(promise + 100, [1]))
        assert err.value.status == 404
        assert await instance.ask(Complete(promise, [5])) is True
        assert await instance.ask(Complete(promise, [6])) is False
    assert [r.payload for r in results] == [b"[[5]]", b"[[5]]"]
    assert (await instance.ask(Invoke("request", ["x"], key=key))).payload == b"[[5]]"
    with pytest.raises(WorkerError) as err:  # the key stands for one call
        await instance.ask(Invoke("request", ["y"], key=key))
    assert err.value.status == 409


async def test_template_versions_follow_interface_changes(store):
    tid = template_id_for("versioned")
    assert await store.write(sql.sync_template_version, tid, "versioned", "h1") == 1
    assert await store.write(sql.sync_template_version, tid, "versioned", "h1") == 1
    assert await store.write(sql.sync_template_version, tid, "versioned", "h2") == 2
    assert await store.write(sql.sync_template_version, tid, "versioned", "h2") == 2
