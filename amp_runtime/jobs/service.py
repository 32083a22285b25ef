"""The jobs service: the rules of the Jobs API, between the routes and the scheduler actor.

Reads (`get`, `list`, `progress`) go straight to the store; anything that changes a job's
status goes through the scheduler actor. Deleting a job deletes its record, progress and
history only: the Parquet files it wrote stay under `[jobs] output_dir` (`<data-dir>/datasets`).

On DuckDB this process owns every job; on a PostgreSQL store every process is a peer
(`placement.SharedStore`, `peers.PeerScheduler`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Awaitable, Callable

import trio

from ..config import ConfigError
from ..core.actor import ActorUnavailable, log_failure, supervise
from ..core.availability import outage_silence_s
from ..core.notify import Wakeup
from ..core.service import ServiceBase
from . import builtin  # noqa: F401  registers example/blocks@1.0.0
from . import states
from . import store as jobs_store
from .datasets import DATASETS, output_dir, resolve
from .extractor import overlapping_file
from .models import MAX_BLOCK, Job, JobList, JobProgress, JobsError
from .progress import ProgressWriter
from .runner import RunnerEnv
from .messages import Create, Stop, Suspend, WorkersAlive
from .placement import placement_for
from .scheduler import Scheduler

log = logging.getLogger("amp_runtime.jobs")

MAX_JOB_ID = 2**63 - 1


def parse_job_id(text: str) -> int:
    """Path ids are decimal integers from 1 (the store's sequence starts there); anything else
    is 400 INVALID_JOB_ID."""
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_JOB_ID:
        raise JobsError(400, "INVALID_JOB_ID", f"invalid job id {text!r}: expected a positive integer")
    return int(text)


def check_jobs_config(jobs) -> None:
    """Raise ConfigError naming every `[jobs]` key whose value cannot work."""
    problems = [
        f"jobs.{key}: {rule}"
        for key, ok, rule in (
            ("batch_blocks", jobs.batch_blocks >= 1, "must be at least 1"),
            ("continuous_blocks_per_s", jobs.continuous_blocks_per_s > 0, "must be positive"),
            ("default_limit", 1 <= jobs.default_limit <= jobs.max_limit, "must be between 1 and max_limit"),
            ("worker_check_s", jobs.worker_check_s > 0, "must be positive"),
            ("expiry_grace_s", jobs.expiry_grace_s >= 0, "must not be negative"),
        )
        if not ok
    ]
    if problems:
        raise ConfigError("bad config: " + "; ".join(problems))


class JobService(ServiceBase):
    def __init__(self, config, store, *, tasks, live_workers: Callable[[], Awaitable[list[str]]]):
        """`tasks`: the task service (worker ids, job slots); `live_workers`: the registry's
        live local workers."""
        super().__init__(config, store)
        check_jobs_config(self.config.jobs)
        self.tasks = tasks
        self.live_workers = live_workers
        self.progress = ProgressWriter(store)
        self.scheduler: Scheduler | None = None
        self.placement = placement_for(self)
        self._wakeup = Wakeup()  # set by the store's NOTIFY listener (peers): check the table now
        self._accepting = True

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the progress writer, the scheduler (which resumes active jobs), their
        runners, the worker watch loop and (peers) the NOTIFY listener; all are cancelled
        at shutdown."""
        restarts = self.config.actors.max_restarts_per_minute
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(supervise, self.progress, max_restarts_per_minute=restarts))
            env = RunnerEnv(
                store=self.store,
                tasks=self.tasks,
                progress=self.progress,
                output_dir=output_dir(self.config),
                blocks_per_s=self.config.jobs.continuous_blocks_per_s,
                ask=self._ask,
            )
            await self.placement.join()
            self.scheduler = self.placement.scheduler(env, nursery)
            await nursery.start(partial(supervise, self.scheduler, max_restarts_per_minute=restarts))
            nursery.start_soon(self._watch_workers)
            nursery.start_soon(self.placement.listen, self._wakeup)
            task_status.started()

    def stop_accepting(self) -> None:
        """Refuse new jobs and pause running ones now, so their worker slots free up before
        the task service drains (it waits for idle slots)."""
        self._accepting = False
        if self.scheduler is not None:
            self.scheduler.tell_nowait(Suspend())

    async def drain(self) -> None:
        """Wait for the paused runners to exit (jobs keep their status and resume at the next
        start), then make their last progress durable."""
        if self.scheduler is None:
            return
        try:
            for done in await self._ask(Suspend()):
                await done.wait()
            await self.progress.flush()
            await self.placement.hand_over(self._ask)  # peers: the others resume them at once
        except ActorUnavailable:
            log.warning("jobs: drained without the scheduler; active jobs resume at the next start")
        except Exception as exc:  # e.g. the store is unreachable: the jobs wait for a takeover instead
            log_failure(log, exc, "jobs: handing the jobs over failed; they are taken over when this peer expires")

    async def _ask(self, msg):
        return await self.scheduler.ask(msg, timeout=float("inf"))

    async def _watch_workers(self) -> None:
        """Every `worker_check_s`, or sooner when woken (peers: a NOTIFY), tell the scheduler
        who is live. A failing check is logged and retried: it must not take the jobs service
        down. Ends when the process drains (its own workers unregister then: they are not dead
        workers)."""
        while self._accepting:
            await self._wakeup.wait(self.config.jobs.worker_check_s)
            if not self._accepting:
                return
            registry = self.config.registry
            if self.store.available_for() < outage_silence_s(registry.liveness_s, registry.heartbeat_s):
                continue  # just back from a store outage: no worker is judged missing for its silence
            try:
                candidates, live = await self._candidates()
                await self._ask(WorkersAlive(live=live, candidates=candidates, now=trio.current_time()))
            except Exception as exc:
                log_failure(log, exc, "jobs: checking worker liveness failed; retrying")

    async def _candidates(self) -> tuple[list[str], list[str]]:
        """(live workers that can hold a job's slot, every live worker)."""
        return await self.placement.candidates()

    # -- the API's rules ---------------------------------------------------------------
    async def create(self, dataset: str, start_block: int, end_block: int | None, node_id: str | None) -> Job:
        if not self._accepting:
            raise JobsError(503, "SHUTTING_DOWN", "the server is shutting down")
        problems = []
        if resolve(dataset) is None:
            known = ", ".join(sorted(DATASETS)) or "none"
            raise JobsError(400, "UNKNOWN_DATASET", f"unknown dataset {dataset!r} (registered: {known})")
        if not 0 <= start_block <= MAX_BLOCK:
            problems.append(f"start_block must be between 0 and {MAX_BLOCK}")
        if end_block is not None and not start_block <= end_block <= MAX_BLOCK:
            problems.append(f"end_block must be >= start_block ({start_block}) and <= {MAX_BLOCK}")
        if problems:
            raise JobsError(400, "INVALID_BLOCK_RANGE", "; ".join(problems))
        candidates, _ = await self._candidates()
        if node_id is not None and node_id not in candidates:
            where = "is not live" if node_id in self.tasks.worker_ids() else "is not a worker of this runtime"
            raise JobsError(400, "INVALID_NODE_ID", f"node {node_id!r} {where}; live: {', '.join(candidates) or 'none'}")
        await self._refuse_overlap(dataset, start_block, end_block)
        record = await self._ask(Create(dataset, start_block, end_block, node_id, candidates))
        return record.to_api()

    async def _refuse_overlap(self, dataset: str, start_block: int, end_block: int | None) -> None:
        """409 when the new job's files would overlap files already written (another job's grid
        or end): a glob over the table would count those blocks twice. The same files are fine
        (rewritten identically); an active job of the dataset is refused by the scheduler."""
        spec = resolve(dataset)
        overlap = await trio.to_thread.run_sync(
            overlapping_file, output_dir(self.config), spec, start_block, end_block, self.config.jobs.batch_blocks)
        if overlap is None:
            return
        writer = await self.store.read(jobs_store.job_covering, dataset, overlap.first, overlap.last)
        if writer is not None and writer.status not in states.TERMINAL:
            return  # still writing: the scheduler answers ACTIVE_JOB_EXISTS
        by = f"job {writer.id} ({writer.status})" if writer is not None else "a job since deleted"
        raise JobsError(409, "OVERLAPPING_JOB", (
            f"{by} wrote blocks {overlap.first}-{overlap.last} of {dataset} table {overlap.table}; this job's file "
            f"{overlap.own_first}-{overlap.own_last} would overlap it and a glob would count those blocks twice. "
            "Choose a range on the same grid or one that does not overlap, or remove that job's files"))

    async def get(self, job_id: str) -> Job:
        record = await self.store.read(jobs_store.get_job, parse_job_id(job_id))
        if record is None:
            raise JobsError(404, "JOB_NOT_FOUND", f"job {job_id} not found")
        return record.to_api()

    async def list(self, limit: int | None, last_job_id: str | None, status: str | None) -> JobList:
        jobs_config = self.config.jobs
        limit = jobs_config.default_limit if limit is None else limit
        if limit < 1:
            raise JobsError(400, "LIMIT_INVALID", f"limit must be at least 1, got {limit}")
        if limit > jobs_config.max_limit:
            raise JobsError(400, "LIMIT_TOO_LARGE", f"limit must be at most {jobs_config.max_limit}, got {limit}")
        before = None
        if last_job_id is not None:
            try:
                before = parse_job_id(last_job_id)
            except JobsError:
                raise JobsError(400, "INVALID_LAST_JOB_ID", f"invalid last_job_id {last_job_id!r}: expected a job id") from None
        try:
            statuses = states.parse_status_filter(status)
        except ValueError as exc:
            raise JobsError(400, "INVALID_STATUS", str(exc)) from None
        records = await self.store.read(jobs_store.list_jobs, statuses, before, limit)
        next_cursor = records[-1].id if len(records) == limit else None
        return JobList(jobs=[r.to_api() for r in records], next_cursor=next_cursor)

    async def progress_of(self, job_id: str) -> JobProgress:
        record, rows = await self.store.read(jobs_store.job_with_progress, parse_job_id(job_id))
        if record is None:
            raise JobsError(404, "JOB_NOT_FOUND", f"job {job_id} not found")
        return JobProgress(job_id=record.id, job_status=record.status, tables={r.table: r.to_api() for r in rows})

    async def stop(self, job_id: str) -> Job:
        record = await self._ask(Stop(parse_job_id(job_id)))
        if record is None:
            raise JobsError(404, "JOB_NOT_FOUND", f"job {job_id} not found")
        return record.to_api()

    async def delete(self, job_id: str) -> None:
        """Delete a terminal job's record (its Parquet output stays on disk); absent is fine."""
        blocking = await self.store.write(jobs_store.delete_job, parse_job_id(job_id))
        if blocking is not None:
            raise JobsError(
                409, "JOB_NOT_TERMINAL", f"job {job_id} is {blocking}; only Completed, Stopped or Failed jobs can be deleted"
            )

    async def delete_many(self, status: str | None) -> int:
        """Delete every job matching a terminal filter in one transaction; returns how many."""
        statuses = states.BULK_DELETE_FILTERS.get((status or "").strip().lower())
        if statuses is None:
            given = "missing" if status is None else repr(status)
            raise JobsError(
                400, "INVALID_STATUS", f"status is {given}: use one of {', '.join(states.BULK_DELETE_FILTERS)}"
            )
        return await self.store.write(jobs_store.delete_jobs_with_status, statuses)
