"""Jobs as peers over one shared PostgreSQL store: the scheduler of one peer.

Every process with the same store URL is a peer and the `jobs` table is the truth. A peer runs
the jobs assigned to its own workers (`local_workers`) and nothing else; any peer creates,
lists, stops and deletes any job in the table. Each change of a job's status or worker is a
compare-and-set in the store, so of peers racing for one change exactly one wins (the losers
re-read the row: `JobChanged` -> `_changed`). A peer re-reads the table when woken by a
NOTIFY and every `[jobs] worker_check_s` (`WorkersAlive`), then:
- adopts the jobs newly assigned to its workers and starts their runners;
- follows changes made elsewhere: a stop requested by another peer, a job moved away,
  finished or deleted;
- takes over the jobs of workers missing from the shared registry for `expiry_grace_s`
  (their process died): a compare-and-set of `node_id` from the dead worker to its own least
  loaded live worker; the runner resumes from the persisted progress and rewrites the same
  files. With no live worker anywhere the job fails, as in one process.
A draining peer pauses its runners (`Suspend`) and hands their jobs to the least loaded live
workers of the other peers at once (`HandOver`), waking them with a NOTIFY.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Awaitable, Callable

from ..core.clock import utcnow
from . import states
from . import store as jobs_store
from .messages import Create, HandOver, WorkersAlive
from .models import JobsError
from .runner import RunnerHandle
from .scheduler import ActiveJob, JobChanged, Scheduler
from .states import Event
from .store import JobRecord

log = logging.getLogger("amp_runtime.jobs")

STOP_RETRIES = 3  # a stop racing other peers' changes re-reads and tries again this often


class PeerScheduler(Scheduler):
    def __init__(self, env, nursery, config, *, local_workers: list[str],
                 announce: Callable[[list[int]], Awaitable[None]]):
        super().__init__(env, nursery, config, local_workers=local_workers)
        self._announce = announce  # wakes the peers (NOTIFY) after a change they must act on
        self._table: dict[int, JobRecord] = {}  # every active job as last read: for load only

    # -- start ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        """Rebuild from the table: adopt the active jobs of this process's workers."""
        leftovers = self._cancel_leftovers()
        records = await self.env.store.read(jobs_store.active_jobs)
        self._table = {record.id: record for record in records}
        for record in records:
            if record.node_id in self.local_workers:
                try:
                    await self._follow(record, previous=leftovers.get(record.id))
                except JobChanged as changed:
                    await self._changed(changed.job_id)
        if self._active:
            log.info("jobs: resumed %d active job(s) of this peer's workers", len(self._active))

    # -- messages --------------------------------------------------------------------------
    async def _dispatch(self, msg):
        if isinstance(msg, HandOver):
            return await self._hand_over(msg.candidates)
        return await super()._dispatch(msg)

    async def _create(self, msg: Create) -> JobRecord:
        await self._read_table()  # for the load of every worker, not only this peer's
        for record in self._table.values():
            if record.dataset == msg.dataset:
                raise _active_job_exists(record)
        if msg.node_id is not None:
            node_id = msg.node_id
        elif msg.candidates:
            node_id = self._least_loaded(msg.candidates)
        else:
            raise JobsError(503, "NO_LIVE_WORKER", "no live worker can run the job")
        record, created = await self.env.store.write(
            jobs_store.insert_job_unless_active, msg.dataset, msg.start_block, msg.end_block, node_id,
            self.jobs_config.batch_blocks, utcnow(),
        )
        if not created:  # another peer created one since the read above
            raise _active_job_exists(record)
        self._missing_since.pop(node_id, None)  # live now: an older liveness snapshot must not move it
        self._table[record.id] = record
        if node_id in self.local_workers:
            await self._follow(dataclasses.replace(record))
        else:
            await self._announce([record.id])
        return dataclasses.replace(record)

    async def _stop(self, job_id: int) -> JobRecord | None:
        for _ in range(STOP_RETRIES):
            fresh = await self.env.store.read(jobs_store.get_job, job_id)
            try:
                if fresh is None or states.is_terminal(fresh.status):
                    await self._follow_gone(job_id, fresh)
                    return fresh
                if fresh.node_id in self.local_workers:
                    await self._follow(fresh)
                    return await super()._stop(job_id)
                # Another peer's job: ask for the stop in the table and wake its owner, which
                # winds it down. If the owner is dead, the peer taking the job over ends it.
                job = ActiveJob(fresh)
                await self._transition(job, Event.REQUEST_STOP)
                await self._announce([job_id])
                return dataclasses.replace(job.record)
            except JobChanged:
                continue
        raise JobsError(503, "JOB_BUSY", f"job {job_id} kept changing under the stop; try again")

    async def _workers_alive(self, msg: WorkersAlive) -> list[int]:
        """Re-read the table: follow this peer's jobs, take over those of expired workers."""
        if self._suspended:
            return []
        await self._read_table()
        live = set(msg.live)
        for worker in list(self._missing_since):
            if worker in live:
                del self._missing_since[worker]
        for job_id in list(self._active):
            if job_id not in self._table:  # finished, stopped or deleted by someone else
                await self._follow_gone(job_id, None)
        touched = []
        for record in list(self._table.values()):
            try:
                ours = record.node_id in self.local_workers or record.id in self._active
                if record.node_id not in live:
                    since = self._missing_since.setdefault(record.node_id, msg.now)
                    if msg.now - since >= self.jobs_config.expiry_grace_s:
                        if await self._take_over(record, msg):
                            touched.append(record.id)
                        continue
                if ours:
                    await self._follow(record)
            except JobChanged as changed:
                await self._changed(changed.job_id)
        assigned = {record.node_id for record in self._table.values()}
        for worker in [w for w in self._missing_since if w not in assigned]:
            del self._missing_since[worker]  # no job waits for it: forget it
        return touched

    async def _hand_over(self, candidates: list[str]) -> list[int]:
        others = [worker for worker in candidates if worker not in self.local_workers]
        moved = []
        if not others:
            if self._active:
                log.info("jobs: no other peer is live; %d job(s) wait here for a restart or a takeover",
                         len(self._active))
            return moved
        await self._read_table()
        for job_id, job in list(self._active.items()):
            if job.runner is not None and not job.runner.done.is_set():
                continue  # still running (the drain's grace is over): its worker expires instead
            target = self._least_loaded(others)
            try:
                await self._move(job, target)
            except JobChanged:
                continue
            self._active.pop(job_id, None)
            self._table[job_id] = job.record
            moved.append(job_id)
            log.info("job %d handed over to %s (this peer drains)", job_id, target, extra={"job_id": job_id})
        if moved:
            await self._announce(moved)
        return moved

    # -- following the table ------------------------------------------------------------
    async def _changed(self, job_id: int) -> None:
        """A compare-and-set was lost: re-read the job and follow what the table says."""
        fresh = await self.env.store.read(jobs_store.get_job, job_id)
        try:
            if fresh is None or states.is_terminal(fresh.status) or fresh.node_id not in self.local_workers:
                await self._follow_gone(job_id, fresh)
            else:
                await self._follow(fresh)
        except JobChanged:
            log.info("job %d keeps changing; the next table check follows it", job_id, extra={"job_id": job_id})

    async def _follow(self, fresh: JobRecord, previous: RunnerHandle | None = None) -> None:
        """Bring the local view of one active job in line with its row (`fresh`)."""
        if fresh.node_id not in self.local_workers:
            await self._follow_gone(fresh.id, fresh)
            return
        self._table[fresh.id] = fresh
        job = self._active.get(fresh.id)
        if job is None:
            job = self._active[fresh.id] = ActiveJob(fresh)
        else:
            job.record = fresh
        runner = job.runner
        if runner is not None and runner.done.is_set():
            runner = job.runner = None  # ended without an outcome (paused, or refused a start)
        if runner is not None and runner.node_id != fresh.node_id:  # moved between our workers
            runner.cancel_scope.cancel()
            previous, runner, job.runner = runner, None, None
        if self._suspended:
            return
        if fresh.status in (states.STOP_REQUESTED, states.STOPPING):
            if runner is not None and runner.extracting:
                runner.request_stop()  # it winds down through Stopping at a batch boundary
                return
            if runner is not None:  # still waiting for a slot: it never ran
                runner.cancel_scope.cancel()
                job.runner = None
            await self._transition(job, Event.FINISH_STOPPING)
        elif runner is None:
            self._spawn(job, previous=previous)

    async def _follow_gone(self, job_id: int, fresh: JobRecord | None) -> None:
        """The job is not this peer's to run any more (moved, ended or deleted elsewhere)."""
        if fresh is None or states.is_terminal(fresh.status):
            self._table.pop(job_id, None)
        else:
            self._table[job_id] = fresh
        job = self._active.pop(job_id, None)
        if job is not None and job.runner is not None:
            job.runner.cancel_scope.cancel()
            where = "ended" if fresh is None or states.is_terminal(fresh.status) else f"moved to {fresh.node_id}"
            log.info("job %d %s elsewhere: its runner here is cancelled", job_id, where, extra={"job_id": job_id})

    async def _take_over(self, record: JobRecord, msg: WorkersAlive) -> bool:
        """Claim a job of an expired worker (compare-and-set on `node_id`) for this peer's least
        loaded live worker; a job of this peer's own expired worker may go to another peer's.
        With no live worker anywhere the job fails (or ends Stopped), as in one process.
        False when another peer is better placed or claimed it first."""
        mine = [worker for worker in msg.candidates if worker in self.local_workers]
        reason = f"worker {record.node_id} is no longer live"
        if not self.jobs_config.reschedule_on_expiry:
            await self._end_orphan(record, f"{reason} (reschedule_on_expiry is off)")
            return True
        if mine:
            target = self._least_loaded(mine)
        elif not msg.candidates:
            await self._end_orphan(record, f"{reason} and no other worker is live")
            return True
        elif record.node_id in self.local_workers:
            target = self._least_loaded(msg.candidates)
        else:
            return False  # a peer with a live worker takes it
        now = utcnow()
        if not await self.env.store.write(jobs_store.set_node, record.id, record.node_id, target, now):
            return False
        fresh = dataclasses.replace(record, node_id=target, updated_at=now.replace(tzinfo=None))
        self._table[record.id] = fresh
        log.info("job %d moved from %s to %s (%s)", record.id, record.node_id, target, reason,
                 extra={"job_id": record.id})
        if target in self.local_workers:
            await self._follow(fresh)
        else:
            await self._follow_gone(record.id, fresh)
            await self._announce([record.id])
        return True

    async def _end_orphan(self, record: JobRecord, error: str) -> None:
        """Fail a job nobody can run (a stopping one ends Stopped); compare-and-set on status."""
        job = self._active.get(record.id) or ActiveJob(record)
        job.record = record
        if job.runner is not None:
            job.runner.cancel_scope.cancel()
            job.runner = None
        if record.status in (states.STOP_REQUESTED, states.STOPPING):
            await self._transition(job, Event.FINISH_STOPPING)
        else:
            await self._transition(job, Event.FAIL, error=error)
        self._active.pop(record.id, None)
        self._table.pop(record.id, None)

    async def _read_table(self) -> None:
        records = await self.env.store.read(jobs_store.active_jobs)
        self._table = {record.id: record for record in records}

    def _least_loaded(self, candidates: list[str]) -> str:
        """By the active jobs in the whole table, not only this peer's."""
        load = {worker: 0 for worker in candidates}
        for record in self._table.values():
            if record.node_id in load:
                load[record.node_id] += 1
        return min(candidates, key=lambda worker: load[worker])


def _active_job_exists(record: JobRecord) -> JobsError:
    return JobsError(
        409, "ACTIVE_JOB_EXISTS",
        f"dataset {record.dataset} already has active job {record.id} ({record.status}); "
        "stop it or wait for it to finish",
    )
