"""One run of one job: hold a worker slot, write the files, report progress, say how it ended.

A runner never changes a job's status itself: it asks the scheduler (`Started`, `Stopping`,
`Finished`), which persists the transition. Three ways to end early:
- stop (`PUT /jobs/{id}/stop`): at the next batch boundary, through Stopping to Stopped;
- pause (the process drains): at the next batch boundary, progress flushed, no outcome: the
  job keeps its status and resumes at the next start (or on another node);
- wait (the store is away): at the next batch boundary, as a pause, but the same runner goes on
  from its persisted progress once the store answers again;
- cancel (moved, or the drain's grace is over): anywhere. A write in flight is abandoned
  (`files.JobFiles`): its file is in place already or never will be. Progress is absolute and
  may lag the files on disk; the next run rewrites those under the same names, same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..core.actor import is_outage
from ..core.contain import is_our_cancellation
from ..core.words import exception_name, exception_text
from ..core.logs import log_ids
from . import store as jobs_store
from .datasets import resolve
from .messages import Finished, Started, Stopping
from .extractor import batches, remove_temp_files
from .files import JobFiles
from .store import JobRecord, ProgressRow

if TYPE_CHECKING:
    from .progress import ProgressWriter

log = logging.getLogger("amp_runtime.jobs")


@dataclass(eq=False)
class RunnerHandle:
    """The scheduler's grip on one run: cancel it, ask it to stop or pause, know when it is gone.

    Shared by the run and whoever steers it; its methods never await (atomic between checkpoints).
    """

    job_id: int
    attempt: int
    node_id: str
    previous: "RunnerHandle | None" = None  # a cancelled earlier run that must exit first
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stop_requested: trio.Event = field(default_factory=trio.Event)
    pause_requested: trio.Event = field(default_factory=trio.Event)
    wake: trio.Event = field(default_factory=trio.Event)  # a stop or a pause was asked for
    # It holds its slot and writes files (or a node runs it): a pause waits for a boundary.
    extracting: bool = False
    done: trio.Event = field(default_factory=trio.Event)

    def request_stop(self) -> None:
        self.stop_requested.set()
        self.wake.set()

    def request_pause(self) -> None:
        """End at the next batch boundary with progress flushed, or now if nothing is written yet."""
        self.pause_requested.set()
        self.wake.set()
        if not self.extracting:
            self.cancel_scope.cancel()

    @property
    def winding_down(self) -> bool:
        return self.wake.is_set()


@dataclass(slots=True)
class RunnerEnv:
    """What every runner needs from the runtime."""

    store: Any
    tasks: Any  # the task service: hold_slot(worker_id, holder=...)
    progress: "ProgressWriter"
    output_dir: Path  # root of the dataset files (`[jobs] output_dir`)
    blocks_per_s: float
    ask: Any  # the scheduler's ask


async def run_job(env: RunnerEnv, handle: RunnerHandle, record: JobRecord) -> None:
    """Run until the range is done, a stop is requested, or the scheduler cancels us."""
    try:
        with handle.cancel_scope, log_ids(job_id=record.id):
            if handle.previous is not None:
                await handle.previous.done.wait()
            while True:
                try:
                    outcome = await _run(env, handle, record)
                except BaseException as exc:  # a dataset's SystemExit & co. too: the job fails, not the server
                    if is_our_cancellation(exc):
                        raise
                    if is_outage(exc):  # not the job's failure: it goes on when the store is back
                        log.info("job %d waits for the store (%s)", record.id, exc)
                        if await _store_back_unless_paused(env, handle):
                            log.info("job %d goes on: the store answers again", record.id)
                            continue
                        outcome = None  # the process drains: the job resumes at the next start
                        break
                    outcome = ("fail", f"{exception_name(exc)}: {exception_text(exc)}")
                    log.warning("job %d failed: %s", record.id, outcome[1])
                break
            while outcome is not None:
                try:
                    await env.ask(Finished(record.id, handle.attempt, *outcome))
                    break
                except Exception as exc:  # the outcome waits for the store that records it
                    if not is_outage(exc) or not await _store_back_unless_paused(env, handle):
                        raise
    finally:
        handle.done.set()


async def _store_back_unless_paused(env: RunnerEnv, handle: RunnerHandle) -> bool:
    """Until the store answers (True) or a pause is asked for (False); a stop waits for the
    store, which it needs to be recorded."""
    if handle.pause_requested.is_set():
        return False
    async with trio.open_nursery() as nursery:
        async def first(wait) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, env.store.until_available)
        if not handle.pause_requested.is_set():
            nursery.start_soon(first, handle.pause_requested.wait)
    return not handle.pause_requested.is_set()


async def _run(env: RunnerEnv, handle: RunnerHandle, record: JobRecord) -> tuple[str, str | None] | None:
    spec = resolve(record.dataset)
    if spec is None:
        raise LookupError(f"dataset {record.dataset} is not registered in this process")
    async with env.tasks.hold_slot(handle.node_id, holder=f"job:{record.id}"):
        if handle.pause_requested.is_set() or not await env.ask(Started(record.id, handle.attempt)):
            return None  # paused, stopped or moved while waiting for the slot
        handle.extracting = True
        await env.progress.flush()  # an earlier run's reports land before we read them
        persisted = await env.store.read(jobs_store.progress_of, record.id)
        done = {row.table: row for row in persisted}
        await trio.to_thread.run_sync(remove_temp_files, env.output_dir, spec)
        # A private connection: the store's connection belongs to the store actor, never bulk work.
        files = JobFiles(record.id, env.output_dir, spec)
        try:
            await files.open()
            finished = await _extract(env, handle, record, spec, files, done)
        finally:
            files.close()
        stopping = not finished and handle.stop_requested.is_set()
        if stopping:  # seen between files: nothing is half-written
            await env.ask(Stopping(record.id, handle.attempt))
    await env.progress.flush()
    if not finished and not stopping:
        log.info("job %d paused at block %s (the process drains); it resumes from there",
                 record.id, _current_block(done))
        return None
    return ("stopped" if stopping else "complete", None)


def _current_block(done: dict[str, ProgressRow]) -> str:
    return str(min(row.current_block for row in done.values())) if done else "none"


async def _extract(env, handle: RunnerHandle, record: JobRecord, spec, files: JobFiles,
                   done: dict[str, ProgressRow]) -> bool:
    """Write the batches not persisted yet; True once the range is done, False when a stop or
    a pause was seen at a batch boundary."""
    paced_from = trio.current_time()
    produced = 0
    for first, last in batches(record.start_block, record.end_block, record.batch_blocks):
        if handle.winding_down:
            return False
        if env.store.unavailable is not None:
            await env.progress.flush()  # raises the outage (this run waits) unless it is over already
        wrote = False
        for table in spec.tables:
            before = done.get(table)
            if before is not None and last <= before.current_block:
                continue  # persisted by an earlier run
            wrote = True
            size = await files.write(table, first, last)
            row = ProgressRow(
                job_id=record.id,
                table=table,
                files_count=(before.files_count if before else 0) + 1,
                total_size_bytes=(before.total_size_bytes if before else 0) + size,
                start_block=record.start_block,
                current_block=last,
            )
            done[table] = row
            await env.progress.report(row)
        if wrote and record.end_block is None:  # continuous: keep to the configured rate
            produced += last - first + 1
            with trio.move_on_at(paced_from + produced / env.blocks_per_s):
                await handle.wake.wait()
    return True
