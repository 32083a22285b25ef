"""One run of one job: hold a worker slot, write the files, report progress, say how it ended.

A runner never changes a job's status itself: it asks the scheduler (`Started`, `Stopping`,
`Finished`), which persists the transition. Cancellation (the scheduler moved or stopped the
job, or the process is shutting down) can land anywhere: files are replaced atomically and
progress is absolute, so the next run picks up from the last persisted progress.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from . import store as jobs_store
from .datasets import resolve
from .messages import Finished, Started, Stopping
from .extractor import batches, open_private_connection, remove_temp_files, write_file
from .store import JobRecord, ProgressRow

if TYPE_CHECKING:
    from .progress import ProgressWriter

log = logging.getLogger("amp_runtime.jobs")


@dataclass(eq=False)
class RunnerHandle:
    """The scheduler's grip on one run: cancel it, ask it to stop, know when it is gone."""

    job_id: int
    attempt: int
    node_id: str
    previous: "RunnerHandle | None" = None  # a cancelled earlier run that must exit first
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stop_requested: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


@dataclass(slots=True)
class RunnerEnv:
    """What every runner needs from the runtime."""

    store: Any
    tasks: Any  # runtime.tasks: hold_slot(worker_id, holder=...)
    progress: "ProgressWriter"
    output_dir: Path  # root of the dataset files (`[jobs] output_dir`)
    blocks_per_s: float
    ask: Any  # the scheduler's ask
    # Runs a job assigned to a worker of another process (the cluster's node channel); same
    # signature and contract as `run_job`. None: every worker is local.
    run_remote: Any = None


async def run_job(env: RunnerEnv, handle: RunnerHandle, record: JobRecord) -> None:
    """Run until the range is done, a stop is requested, or the scheduler cancels us."""
    try:
        with handle.cancel_scope:
            if handle.previous is not None:
                await handle.previous.done.wait()
            try:
                outcome = await _run(env, handle, record)
            except Exception as exc:
                log.warning("job %d failed: %s: %s", record.id, type(exc).__name__, exc)
                outcome = ("fail", f"{type(exc).__name__}: {exc}")
            if outcome is not None:
                await env.ask(Finished(record.id, handle.attempt, *outcome))
    finally:
        handle.done.set()


async def _run(env: RunnerEnv, handle: RunnerHandle, record: JobRecord) -> tuple[str, str | None] | None:
    spec = resolve(record.dataset)
    if spec is None:
        raise LookupError(f"dataset {record.dataset} is not registered in this process")
    async with env.tasks.hold_slot(handle.node_id, holder=f"job:{record.id}"):
        if not await env.ask(Started(record.id, handle.attempt)):
            return None  # stopped or moved while waiting for the slot
        await env.progress.flush()  # an earlier run's reports land before we read them
        persisted = await env.store.read(jobs_store.progress_of, record.id)
        done = {row.table: row for row in persisted}
        await trio.to_thread.run_sync(remove_temp_files, env.output_dir, spec)
        # A private connection: the store's connection belongs to the coordinator, never bulk work.
        conn = await trio.to_thread.run_sync(open_private_connection)
        try:
            await _extract(env, handle, record, spec, conn, done)
        finally:
            conn.close()
        stopping = handle.stop_requested.is_set()
        if stopping:  # seen between files: nothing is half-written
            await env.ask(Stopping(record.id, handle.attempt))
    await env.progress.flush()
    return ("stopped" if stopping else "complete", None)


async def _extract(env, handle: RunnerHandle, record: JobRecord, spec, conn, done: dict[str, ProgressRow]) -> None:
    paced_from = trio.current_time()
    produced = 0
    for first, last in batches(record.start_block, record.end_block, record.batch_blocks):
        if handle.stop_requested.is_set():
            return
        wrote = False
        for table in spec.tables:
            before = done.get(table)
            if before is not None and last <= before.current_block:
                continue  # persisted by an earlier run
            wrote = True
            # Shielded: a cancel waits for the file anyway; this way every file written is reported.
            with trio.CancelScope(shield=True):
                size = await trio.to_thread.run_sync(
                    write_file, conn, env.output_dir, spec, table, first, last
                )
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
                await handle.stop_requested.wait()
