"""The durable service built on its own with a store: no runtime, no HTTP."""

import trio

from amp_runtime.durable.service import DurableService

from .util import COUNTER

from ..helpers import make_config, running_store


async def test_a_worker_survives_a_new_service_on_the_same_store(tmp_path):
    config = make_config(tmp_path)
    async with running_store(tmp_path / "s.duckdb") as store:
        async with trio.open_nursery() as nursery:
            durable = DurableService(config, store)
            await nursery.start(durable.run)
            await durable.create_worker(COUNTER, "c", [], {})
            key = await durable.new_key(COUNTER, "c")
            first = await durable.invoke_and_await(COUNTER, "c", "add", [2], key, "component")
            again = await durable.invoke_and_await(COUNTER, "c", "add", [2], key, "component")
            assert first.result == again.result == [2]  # the same key: the recorded result
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            rebuilt = DurableService(config, store)
            await nursery.start(rebuilt.run)
            key = await rebuilt.new_key(COUNTER, "c")
            assert (await rebuilt.invoke_and_await(COUNTER, "c", "get", [], key, "component")).result == [2]
            assert rebuilt.invocation_outcomes  # what /metrics reads
            nursery.cancel_scope.cancel()
