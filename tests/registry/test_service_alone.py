"""The registry service built on its own: a store and a fake task snapshot, no runtime."""

import trio

from amp_runtime.registry.service import RegistryService
from amp_runtime.tasks.service import WorkerSnapshot

from ..helpers import make_config, running_store, wait_until


async def test_heartbeats_report_the_running_task_the_snapshot_gives(tmp_path):
    config = make_config(tmp_path, workers=[{"id": "w-a", "slots": 1}], registry={"heartbeat_s": 0.05})
    running = ["task-7"]

    async def snapshot():
        return [WorkerSnapshot(worker="w-a", total=1, free=0, queued=0, maintenance=False, running=list(running))]

    async with running_store(tmp_path / "s.duckdb") as store, trio.open_nursery() as nursery:
        registry = RegistryService(config, store, task_snapshot=snapshot)
        await nursery.start(registry.run)

        async def task_of(worker: str):
            record = await registry.get(worker)
            return record.task if record else None

        await wait_until(lambda: _equals(task_of("w-a"), "task-7"), timeout=20)
        running.clear()
        await wait_until(lambda: _equals(task_of("w-a"), None), timeout=20)
        assert await registry.live_workers() == ["w-a"]
        nursery.cancel_scope.cancel()


async def _equals(value, expected) -> bool:
    return await value == expected
