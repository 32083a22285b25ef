"""The jobs scheduler actor: owns every active job, its worker assignment and its runner.

Every status change goes through `_transition`, which applies the pure table in `states.py`
and persists the new status (with `updated_at` and a history row) before anyone hears of it.
Runners ask this actor for their transitions; a runner's messages carry its `attempt` so a
cancelled, superseded run can never change a job it no longer owns.

This class owns every active job (one process on DuckDB). On a shared
PostgreSQL store `peers.PeerScheduler` owns only the jobs of this process's workers. Status and
worker changes are compare-and-set in the store either way; a lost one raises `JobChanged`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import trio

from ..core.actor import Actor, Outage, Reply
from ..core.clock import utcnow
from . import states
from . import store as jobs_store
from .models import JobsError
from .messages import Create, Finished, Started, Stop, Stopping, Suspend, WorkersAlive
from .runner import RunnerEnv, RunnerHandle, run_job
from .states import Event
from .store import JobRecord

log = logging.getLogger("amp_runtime.jobs")


class JobChanged(Exception):
    """A compare-and-set found the job changed in the store by someone else (a peer)."""

    def __init__(self, job_id: int):
        super().__init__(f"job {job_id} changed in the store")
        self.job_id = job_id


@dataclass(slots=True)
class ActiveJob:
    record: JobRecord
    runner: RunnerHandle | None = None


class Scheduler(Actor):
    def __init__(self, env: RunnerEnv, nursery: trio.Nursery, config, *, local_workers: list[str]):
        super().__init__("jobs-scheduler", mailbox_size=config.actors.mailbox_size)
        self.env = env
        self.nursery = nursery
        self.jobs_config = config.jobs
        self.local_workers = local_workers
        self._active: dict[int, ActiveJob] = {}
        self._attempts = 0
        self._missing_since: dict[str, float] = {}  # worker -> when the watch loop lost it
        self._suspended = False  # the process is draining: no new runners
        self._paused: list[RunnerHandle] = []

    # -- start / restart ---------------------------------------------------------------
    async def on_start(self) -> None:
        """Rebuild from the store; cancel runners a crashed incarnation left behind."""
        leftovers = self._cancel_leftovers()
        for record in await self.env.store.read(jobs_store.active_jobs):
            job = ActiveJob(record)
            self._active[record.id] = job
            if record.status in (states.STOP_REQUESTED, states.STOPPING):
                await self._transition(job, Event.FINISH_STOPPING)  # no runner left to wind down
                continue
            if record.node_id not in self.local_workers:
                await self._move(job, self._least_loaded(self.local_workers))
            self._spawn(job, previous=leftovers.get(record.id))
        if self._active:
            log.info("jobs: resumed %d active job(s)", len(self._active))

    def _cancel_leftovers(self) -> dict[int, RunnerHandle]:
        """Cancel the runners of an earlier incarnation and forget its jobs; returns the
        runners by job id, for the new runs to wait for."""
        leftovers = {}
        for job_id, job in self._active.items():
            if job.runner is not None:
                job.runner.cancel_scope.cancel()
                leftovers[job_id] = job.runner
        self._active = {}
        return leftovers

    # -- messages ----------------------------------------------------------------------
    async def handle(self, msg, reply: Reply | None) -> None:
        try:
            answer = await self._dispatch(msg)
        except JobsError as refusal:  # expected: the asker hears it, the actor carries on
            if reply is not None:
                reply.fail(refusal)
            return
        except Outage as outage:
            # The store is away: the asker hears it and the runners go on. What this actor holds
            # is a cache of the table that compare-and-set checks (JobChanged) bring back in line.
            if reply is not None:
                reply.fail(outage)
            return
        except JobChanged as changed:  # a peer got there first: catch up with the store
            await self._changed(changed.job_id)
            if reply is None:
                return
            if isinstance(msg, (Create, Stop)):  # the client may try again; never a 500
                reply.fail(JobsError(503, "JOB_BUSY", f"job {changed.job_id} changed meanwhile; try again"))
            else:
                reply.set(False if isinstance(msg, Started) else None)
            return
        if reply is not None:
            reply.set(answer)

    async def _dispatch(self, msg):
        match msg:
            case Create():
                answer = await self._create(msg)
            case Stop(job_id=job_id):
                answer = await self._stop(job_id)
            case Started(job_id=job_id, attempt=attempt):
                job = self._owned(job_id, attempt)
                # Running already: a resumed or moved job carries on from its progress.
                answer = job is not None and job.record.status in (states.SCHEDULED, states.RUNNING)
                if answer and job.record.status == states.SCHEDULED:
                    await self._transition(job, Event.START)
            case Stopping(job_id=job_id, attempt=attempt):
                job = self._owned(job_id, attempt)
                if job is not None and job.record.status == states.STOP_REQUESTED:
                    await self._transition(job, Event.BEGIN_STOPPING)
                answer = None
            case Finished():
                answer = await self._finished(msg)
            case WorkersAlive():
                answer = await self._workers_alive(msg)
            case Suspend():
                answer = self._suspend()
            case _:
                raise TypeError(f"unexpected message {msg!r}")
        return answer

    async def _create(self, msg: Create) -> JobRecord:
        for job in self._active.values():
            if job.record.dataset == msg.dataset:
                raise JobsError(
                    409,
                    "ACTIVE_JOB_EXISTS",
                    f"dataset {msg.dataset} already has active job {job.record.id} "
                    f"({job.record.status}); stop it or wait for it to finish",
                )
        if msg.node_id is not None:
            node_id = msg.node_id
        elif msg.candidates:
            node_id = self._least_loaded(msg.candidates)
        else:
            raise JobsError(503, "NO_LIVE_WORKER", "no live worker can run the job")
        record = await self.env.store.write(
            jobs_store.insert_job,
            msg.dataset,
            msg.start_block,
            msg.end_block,
            node_id,
            self.jobs_config.batch_blocks,
            utcnow(),
        )
        job = ActiveJob(record)
        self._active[record.id] = job
        self._spawn(job)
        return dataclasses.replace(record)

    async def _stop(self, job_id: int) -> JobRecord | None:
        job = self._active.get(job_id)
        if job is None:
            record = await self.env.store.read(jobs_store.get_job, job_id)
            if record is None or states.is_terminal(record.status):
                return record  # absent (404) or terminal: no change
            job = ActiveJob(record)  # active in the store but unknown here: no runner
        was = job.record.status
        await self._transition(job, Event.REQUEST_STOP)
        runner = job.runner
        if runner is not None and job.record.status == states.STOP_REQUESTED:
            runner.request_stop()  # a running extractor winds down through Stopping
            if was == states.SCHEDULED:
                runner.cancel_scope.cancel()  # still waiting for a slot: it never ran
                job.runner = None
        if job.runner is None and job.record.status == states.STOP_REQUESTED:
            await self._transition(job, Event.FINISH_STOPPING)
        return dataclasses.replace(job.record)

    async def _finished(self, msg: Finished) -> None:
        job = self._owned(msg.job_id, msg.attempt)
        if job is None:
            return None
        job.runner = None
        status = job.record.status
        if msg.outcome == "fail":
            if status == states.STOP_REQUESTED:
                await self._transition(job, Event.BEGIN_STOPPING)
            await self._transition(job, Event.FAIL, error=msg.error)
        elif status == states.RUNNING:
            await self._transition(job, Event.COMPLETE)
        else:  # a stop request arrived while the last file was written: it ends Stopped
            if job.record.status == states.STOP_REQUESTED:
                await self._transition(job, Event.BEGIN_STOPPING)
            await self._transition(job, Event.FINISH_STOPPING)
        return None

    async def _workers_alive(self, msg: WorkersAlive) -> list[int]:
        """Move (or fail) the active jobs of workers missing for `expiry_grace_s`; returns the
        ids of the jobs it touched. Draining, it touches nothing: this process's own workers
        going away is not a worker dying."""
        if self._suspended:
            return []
        live = set(msg.live)
        for worker in list(self._missing_since):
            if worker in live:
                del self._missing_since[worker]
        touched = []
        for job in list(self._active.values()):
            node = job.record.node_id
            if node in live:
                continue
            since = self._missing_since.setdefault(node, msg.now)
            if msg.now - since < self.jobs_config.expiry_grace_s:
                continue
            touched.append(job.record.id)
            old_runner = job.runner
            if old_runner is not None:
                old_runner.cancel_scope.cancel()
                job.runner = None
            reason = f"worker {node} is no longer live"
            if job.record.status in (states.STOP_REQUESTED, states.STOPPING):
                await self._transition(job, Event.FINISH_STOPPING)
            elif not self.jobs_config.reschedule_on_expiry:
                await self._transition(job, Event.FAIL, error=f"{reason} (reschedule_on_expiry is off)")
            elif not msg.candidates:
                await self._transition(job, Event.FAIL, error=f"{reason} and no other worker is live")
            else:
                await self._move(job, self._least_loaded(msg.candidates))
                self._spawn(job, previous=old_runner)
                log.info("job %d moved from %s to %s (%s)", job.record.id, node, job.record.node_id, reason,
                         extra={"job_id": job.record.id})
        return touched

    def _suspend(self) -> list[trio.Event]:
        """Pause every runner: each ends at its next batch boundary with its progress flushed
        (or at once if it has not started writing) and says nothing, so the job keeps its
        status. It stays the job's runner meanwhile: a run that completes or stops is heard."""
        self._suspended = True
        for job in self._active.values():
            if job.runner is not None and job.runner not in self._paused:
                job.runner.request_pause()
                self._paused.append(job.runner)
        return [runner.done for runner in self._paused]

    async def _changed(self, job_id: int) -> None:
        """Only peers share the store: here a lost compare-and-set is a bug; the actor
        restarts and rebuilds from the store."""
        raise RuntimeError(f"job {job_id} changed in the store behind the scheduler's back")

    # -- helpers -----------------------------------------------------------------------
    async def _transition(self, job: ActiveJob, event: Event, *, error: str | None = None) -> None:
        """Apply `event` and persist it; a no-op transition (idempotent stop) writes nothing."""
        old = job.record.status
        new = states.apply(old, event)
        if new == old:
            return
        now = utcnow()
        if not await self.env.store.write(jobs_store.set_status, job.record.id, old, new, now, error, job.record.node_id):
            raise JobChanged(job.record.id)
        job.record.status = new
        job.record.updated_at = now.replace(tzinfo=None)
        if error is not None:
            job.record.error = error
        if states.is_terminal(new):
            self._active.pop(job.record.id, None)

    async def _move(self, job: ActiveJob, node_id: str) -> None:
        now = utcnow()
        if not await self.env.store.write(jobs_store.set_node, job.record.id, job.record.node_id, node_id, now):
            raise JobChanged(job.record.id)
        job.record.node_id = node_id
        job.record.updated_at = now.replace(tzinfo=None)

    def _spawn(self, job: ActiveJob, previous: RunnerHandle | None = None) -> None:
        if self._suspended:
            return
        self._attempts += 1
        handle = RunnerHandle(job.record.id, self._attempts, job.record.node_id, previous)
        job.runner = handle
        if job.record.status == states.STOP_REQUESTED:
            handle.request_stop()
        # The runner gets its own copy: it reads the range, never the live status.
        self.nursery.start_soon(run_job, self.env, handle, dataclasses.replace(job.record))

    def _owned(self, job_id: int, attempt: int) -> ActiveJob | None:
        job = self._active.get(job_id)
        if job is None or job.runner is None or job.runner.attempt != attempt:
            return None
        return job

    def _least_loaded(self, candidates: list[str]) -> str:
        load = {worker: 0 for worker in candidates}
        for job in self._active.values():
            if job.record.node_id in load:
                load[job.record.node_id] += 1
        return min(candidates, key=lambda worker: load[worker])
