"""Who runs which job: chosen once, at wiring time, from the store backend.

- `SingleProcess` (DuckDB, the default): this process owns every job; all of them run here.
- `SharedStore` (PostgreSQL): every process on the store is a peer (`peers.PeerScheduler`);
  liveness is the shared registry table, wake-ups are NOTIFY on `amp_jobs`, and a draining
  peer hands its jobs to the others.
"""

from __future__ import annotations

from ..core.clock import utcnow
from ..core.notify import Listener, Wakeup
from . import store as jobs_store
from .messages import HandOver
from .peers import PeerScheduler
from .scheduler import Scheduler

CHANNEL = "amp_jobs"


class SingleProcess:
    """This process owns every job; liveness is this process's registry."""

    def __init__(self, service):
        self.service = service

    def scheduler(self, env, nursery) -> Scheduler:
        return Scheduler(env, nursery, self.service.config, local_workers=self.service.tasks.worker_ids())

    async def candidates(self) -> tuple[list[str], list[str]]:
        """(live workers that can hold a job's slot, every live worker): the local workers the
        registry calls live."""
        live = await self.service.live_workers()
        workers = self.service.tasks.worker_ids()
        live_set = set(live)
        return [w for w in workers if w in live_set], list(live)

    async def join(self) -> None:
        """Nothing to announce: every job is this process's."""

    async def listen(self, wakeup: Wakeup) -> None:
        """Nothing to listen to: the worker watch polls."""

    async def hand_over(self, ask) -> None:
        """Paused jobs resume here at the next start."""


class SharedStore:
    """Peers over one PostgreSQL store: the table is the truth, NOTIFY only wakes."""

    def __init__(self, service):
        self.service = service
        self.store = service.store

    def scheduler(self, env, nursery) -> Scheduler:
        return PeerScheduler(env, nursery, self.service.config, local_workers=self.service.tasks.worker_ids(),
                             announce=self.announce)

    async def join(self) -> None:
        """Make this peer's workers known as job workers (before any job is placed)."""
        await self.store.write(jobs_store.add_job_workers, self.service.tasks.worker_ids(), utcnow())

    async def candidates(self) -> tuple[list[str], list[str]]:
        """Every job worker of every peer heard from within `[registry] liveness_s`, twice (any
        live worker can hold a job: its own peer runs it)."""
        live = await self.store.read(jobs_store.live_worker_ids, self.service.config.registry.liveness_s)
        return live, list(live)

    async def announce(self, job_ids: list[int]) -> None:
        await self.store.write(jobs_store.notify_jobs, job_ids)

    async def listen(self, wakeup: Wakeup) -> None:
        await Listener(self.store.backend.url, CHANNEL, wakeup.set).run()

    async def hand_over(self, ask) -> None:
        candidates, _ = await self.candidates()
        await ask(HandOver(candidates))


def placement_for(service) -> SingleProcess | SharedStore:
    return SharedStore(service) if service.store.backend.name == "postgres" else SingleProcess(service)
