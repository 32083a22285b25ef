"""The jobs service built on its own: a store, a fake task service and a fake registry."""

from contextlib import asynccontextmanager

import pytest
import trio

from amp_runtime.jobs.models import JobsError
from amp_runtime.jobs.service import JobService

from ..helpers import make_config, running_store, wait_until
from .jobutil import DATASET


class FakeTasks:
    """What the jobs service uses of the task service: worker ids and a slot per running job."""

    def __init__(self, worker_ids: list[str]):
        self.ids = worker_ids
        self.holders: list[str] = []

    def worker_ids(self) -> list[str]:
        return list(self.ids)

    @asynccontextmanager
    async def hold_slot(self, worker_id: str, holder: str):
        self.holders.append(holder)
        yield


async def test_a_job_runs_on_the_live_worker_the_collaborators_name(tmp_path):
    config = make_config(tmp_path, workers=[{"id": "w-a"}, {"id": "w-b"}],
                         jobs={"batch_blocks": 50, "continuous_blocks_per_s": 1000.0})
    tasks = FakeTasks(["w-a", "w-b"])

    async def live_workers(max_age_s=None):
        return ["w-b"]

    async with running_store(tmp_path / "s.duckdb") as store, trio.open_nursery() as nursery:
        jobs = JobService(config, store, tasks=tasks, live_workers=live_workers)
        await nursery.start(jobs.run)
        with pytest.raises(JobsError, match="is not live"):
            await jobs.create(DATASET, 0, 99, "w-a")
        with pytest.raises(JobsError, match="is not a worker of this runtime"):
            await jobs.create(DATASET, 0, 99, "elsewhere")
        job = await jobs.create(DATASET, 0, 99, None)
        assert job.node_id == "w-b"

        async def settled():
            return (await jobs.get(str(job.id))).status in ("Completed", "Failed")

        await wait_until(settled, timeout=30)
        assert (await jobs.get(str(job.id))).status == "Completed"
        assert tasks.holders == [f"job:{job.id}"]
        nursery.cancel_scope.cancel()
