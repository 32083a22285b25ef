"""The task service built on its own with a store: no runtime."""

import trio

from amp_runtime.tasks.service import TaskService

from ..helpers import make_config, running_store, wait_until


async def test_a_held_slot_shows_in_the_snapshot(tmp_path):
    config = make_config(tmp_path, workers=[{"id": "w-a", "slots": 2}])
    async with running_store(tmp_path / "s.duckdb") as store, trio.open_nursery() as nursery:
        tasks = TaskService(config, store)
        await nursery.start(tasks.run)
        assert tasks.worker_ids() == ["w-a"]
        async with tasks.hold_slot("w-a", holder="job:1"):
            (snap,) = await tasks.snapshot()
            assert (snap.free, snap.running) == (1, ["job:1"])

        async def all_free():
            return (await tasks.snapshot())[0].free == 2

        await wait_until(all_free, timeout=10)
        nursery.cancel_scope.cancel()
