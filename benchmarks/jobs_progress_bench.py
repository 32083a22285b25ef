"""Job progress updates persisted per second: the jobs progress writer (group commit) vs one
store transaction per update.

    .venv/bin/python -m benchmarks.jobs_progress_bench [--jobs 20] [--updates 400]
                                                       [--postgres | --store-url postgresql://...]

Each of `--jobs` simulated runners reports `--updates` absolute progress rows (one per file
written, two tables per job), as runners do. Group commit: `ProgressWriter.report` then one
`flush`; the writer coalesces rows per (job, table) and commits whatever is waiting in one
transaction. Baseline: `await store.write(upsert_progress, [row])` per update on a store with
`group_commit_rows = 1`, so every update is its own durable transaction. Both use a real
DuckDB file in a temporary directory; with `--postgres`, a throwaway PostgreSQL server with
fsync on (its own temp dir; `--store-url` names an existing database instead, whose
`job_progress` rows of job ids 1..`--jobs` the run overwrites). Bounded: the baselines stop after `--baseline-s`.
Also printed: updates that each await `store.write` on the default store (its own group
commit batches concurrent writers, but each runner still waits a commit per file).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from amp_runtime.core.backends import store_backend
from amp_runtime.core.clock import utcnow
from amp_runtime.core.store import Store
from amp_runtime.jobs import store as jobs_store
from amp_runtime.jobs.progress import ProgressWriter
from amp_runtime.jobs.store import ProgressRow

TABLES = ("blocks", "transactions")


def row(job: int, update: int) -> ProgressRow:
    return ProgressRow(job, TABLES[update % 2], update // 2 + 1, 1000 * (update + 1), 0, 100 * (update // 2 + 1) - 1)


async def with_store(path: Path, rows_per_commit: int, body, store_url: str = ""):
    store = Store(store_backend(store_url, path), group_commit_rows=rows_per_commit, group_commit_ms=5.0 if rows_per_commit > 1 else 0.0)
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run)
            result = await body(store, nursery)
            store.close()
        return result
    finally:
        await store.close_connection()


async def group_commit(path: Path, jobs: int, updates: int, store_url: str = "") -> tuple[int, float, int]:
    async def body(store, nursery):
        writer = ProgressWriter(store)
        nursery.start_soon(writer.run)

        async def runner(job: int) -> None:
            for update in range(updates):
                await writer.report(row(job, update))
                await trio.sleep(0)  # a runner yields between files (its thread hop)

        started = time.perf_counter()
        async with trio.open_nursery() as runners:
            for job in range(jobs):
                runners.start_soon(runner, job)
        await writer.flush()
        elapsed = time.perf_counter() - started
        writer.close()
        return jobs * updates, elapsed, store.stats.transactions

    return await with_store(path, 500, body, store_url)


async def awaited_writes(
    path: Path, jobs: int, updates: int, budget_s: float, rows_per_commit: int = 1, store_url: str = ""
) -> tuple[int, float, int]:
    """Each update awaits its own `store.write`; with `rows_per_commit=1` each is one transaction."""
    async def body(store, nursery):
        done = 0
        deadline = time.perf_counter() + budget_s

        async def runner(job: int) -> None:
            nonlocal done
            for update in range(updates):
                if time.perf_counter() > deadline:
                    return
                await store.write(jobs_store.upsert_progress, [row(job, update)], utcnow())
                done += 1

        started = time.perf_counter()
        async with trio.open_nursery() as runners:
            for job in range(jobs):
                runners.start_soon(runner, job)
        return done, time.perf_counter() - started, store.stats.transactions

    return await with_store(path, rows_per_commit, body, store_url)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--updates", type=int, default=400, help="progress reports per job")
    parser.add_argument("--baseline-s", type=float, default=10.0, help="time budget of the baseline")
    parser.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL server (fsync on)")
    parser.add_argument("--store-url", default="", help="on this PostgreSQL database instead of a DuckDB file")
    args = parser.parse_args()
    if args.postgres and not args.store_url:
        from benchmarks.cluster_bench import throwaway_postgres

        with throwaway_postgres(durable=True) as url:
            await measure(args, url)
    else:
        await measure(args, args.store_url)


async def measure(args, store_url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        n1, t1, tx1 = await group_commit(Path(tmp) / "group.duckdb", args.jobs, args.updates, store_url)
        n2, t2, tx2 = await awaited_writes(
            Path(tmp) / "each.duckdb", args.jobs, args.updates, args.baseline_s, store_url=store_url
        )
        n3, t3, tx3 = await awaited_writes(
            Path(tmp) / "awaited.duckdb", args.jobs, args.updates, args.baseline_s, rows_per_commit=500,
            store_url=store_url,
        )
    group_rate, each_rate = n1 / t1, n2 / t2
    print(f"store={'postgresql' if store_url else 'duckdb'} jobs={args.jobs} updates/job={args.updates}")
    print(f"group commit (progress writer): {n1} updates in {t1:.2f}s = {group_rate:,.0f} updates/s, {tx1} transactions")
    print(f"one transaction per update:     {n2} updates in {t2:.2f}s = {each_rate:,.0f} updates/s, {tx2} transactions")
    print(f"ratio: {group_rate / each_rate:.1f}x")
    print(
        f"(for reference, each update awaiting store.write with the store's own group commit: "
        f"{n3} updates in {t3:.2f}s = {n3 / t3:,.0f} updates/s, {tx3} transactions)"
    )


if __name__ == "__main__":
    trio.run(main)
