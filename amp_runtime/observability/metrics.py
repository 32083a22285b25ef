"""`/metrics`: a Prometheus collector reading, at scrape time, what the actors already publish.

Nothing is incremented on the task hot path for Prometheus: worker actors keep plain counters
(`outcomes`, `duration_buckets`), the webhook sender its `outcomes`, the store its `stats`; this
module turns them into metric families when scraped. Store reads (jobs) are async, `collect()`
is sync, so a scrape first awaits `gather_store_figures` and hands the result to `render`.
Labels are bounded: worker, function, mode, status/outcome (never a task or job id).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..jobs.states import STATUSES as JOB_STATUSES
from ..tasks.worker import DURATION_BUCKETS_S

RATE_WINDOW_S = 30.0  # rates (blocks/s, batch size) are averaged over the scrapes of this window


@dataclass
class StoreFigures:
    """What a scrape reads from the store. `None` = the table is not there (feature not landed)."""

    jobs_by_status: dict[str, int] | None = None
    blocks_extracted: int | None = None  # per job, its furthest table; summed over jobs on record


def _read_store_figures(conn) -> StoreFigures:
    """Runs on the DB thread; checks the tables first so a missing one is not an error."""
    tables = {row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name IN ('jobs', 'job_progress')"
    ).fetchall()}
    figures = StoreFigures()
    if "jobs" in tables:
        rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
        figures.jobs_by_status = {status: int(count) for status, count in rows}
    if "job_progress" in tables:
        row = conn.execute(
            "SELECT coalesce(sum(blocks), 0) FROM (SELECT job_id, max(current_block - start_block + 1)"
            " AS blocks FROM job_progress GROUP BY job_id) AS per_job"
        ).fetchone()
        figures.blocks_extracted = int(row[0])
    return figures


async def gather_store_figures(store) -> StoreFigures:
    return await store.read(_read_store_figures)


@dataclass
class _Sample:
    at: float
    transactions: int
    writes: int
    blocks: int | None


@dataclass
class _Rolling:
    """Samples of monotonic figures over the last RATE_WINDOW_S, for rates between scrapes."""

    samples: deque[_Sample] = field(default_factory=deque)

    def add(self, sample: _Sample) -> _Sample:
        """Records `sample`; returns the oldest sample still in the window to compare with."""
        self.samples.append(sample)
        while len(self.samples) > 2 and self.samples[1].at <= sample.at - RATE_WINDOW_S:
            self.samples.popleft()
        return self.samples[0]


class RuntimeCollector(Collector):
    """One per runtime. `collect()` uses the store figures handed over by the last `render`.

    `tasks`: the task service (workers, webhook sender); `durable`: the durable service
    (`invocation_outcomes`); `store`: its `stats`; `uptime_s`: seconds since the start."""

    def __init__(self, *, store, tasks, durable, uptime_s: Callable[[], float]):
        self.store = store
        self.tasks = tasks
        self.durable = durable
        self.uptime_s = uptime_s
        self._figures = StoreFigures()
        self._rolling = _Rolling()

    def render(self, figures: StoreFigures, registry: CollectorRegistry) -> bytes:
        # No await between stashing and generating: concurrent scrapes cannot mix their figures.
        self._figures = figures
        return generate_latest(registry)

    def collect(self) -> Iterator[Metric]:
        stats = self.store.stats
        now = _Sample(time.monotonic(), stats.transactions, stats.writes, self._figures.blocks_extracted)
        then = self._rolling.add(now)
        yield GaugeMetricFamily("amp_uptime_seconds", "Seconds since the runtime started", value=self.uptime_s())
        yield from self._worker_families()
        yield from self._webhook_families()
        yield from self._store_families(now, then)
        yield from self._job_families(now, then)
        yield from self._durable_families()

    # -- tasks ---------------------------------------------------------------------------
    def _worker_families(self) -> Iterator[Metric]:
        workers = self.tasks.workers
        total = GaugeMetricFamily("amp_worker_slots", "Slots of a worker", labels=["worker"])
        busy = GaugeMetricFamily("amp_worker_slots_busy", "Slots running a task or held by a job", labels=["worker"])
        abandoned = GaugeMetricFamily("amp_worker_slots_abandoned",
                                      "Busy slots whose task settled while its thread runs on", labels=["worker"])
        queued = GaugeMetricFamily("amp_worker_queue_length", "Tasks and job holds waiting for a slot", labels=["worker"])
        maintenance = GaugeMetricFamily("amp_worker_maintenance", "1 while the worker is in maintenance", labels=["worker"])
        tasks = CounterMetricFamily("amp_tasks", "Settled tasks by function, mode and final status",
                                    labels=["worker", "function", "mode", "status"])
        duration = HistogramMetricFamily("amp_task_duration_seconds", "Run time of tasks that ran", labels=["worker"])
        for worker_id, worker in workers.items():
            state = worker.state
            total.add_metric([worker_id], state.total)
            busy.add_metric([worker_id], state.total - state.free)
            abandoned.add_metric([worker_id], worker.abandoned)
            queued.add_metric([worker_id], state.queued)
            maintenance.add_metric([worker_id], 1 if state.maintenance else 0)
            for (function, mode, status), count in list(worker.outcomes.items()):
                tasks.add_metric([worker_id, function, mode, status], count)
            duration.add_metric([worker_id], cumulative_buckets(worker.duration_buckets), worker.duration_sum_s)
        yield from (total, busy, abandoned, queued, maintenance, tasks, duration)

    def _webhook_families(self) -> Iterator[Metric]:
        deliveries = CounterMetricFamily("amp_webhook_deliveries", "Webhook delivery attempts by outcome",
                                         labels=["outcome"])
        for outcome, count in self.tasks.webhooks.outcomes.items():
            deliveries.add_metric([outcome], count)
        yield deliveries

    # -- store and jobs ------------------------------------------------------------------
    def _store_families(self, now: _Sample, then: _Sample) -> Iterator[Metric]:
        stats = self.store.stats
        yield CounterMetricFamily("amp_store_commits", "Group-commit transactions", value=now.transactions)
        yield CounterMetricFamily("amp_store_writes", "Writes committed in group commits", value=now.writes)
        yield GaugeMetricFamily("amp_store_last_batch_size", "Writes in the last group commit",
                                value=stats.last_batch_size)
        yield GaugeMetricFamily("amp_store_last_commit_seconds", "Duration of the last group commit",
                                value=stats.last_commit_s)
        commits = now.transactions - then.transactions
        yield GaugeMetricFamily(
            "amp_store_batch_size_recent", f"Mean writes per group commit over the last {RATE_WINDOW_S:g}s of scrapes",
            value=(now.writes - then.writes) / commits if commits > 0 else stats.last_batch_size,
        )

    def _job_families(self, now: _Sample, then: _Sample) -> Iterator[Metric]:
        figures = self._figures
        if figures.jobs_by_status is not None:
            jobs = GaugeMetricFamily("amp_jobs", "Jobs on record by status", labels=["status"])
            counts = {status: 0 for status in JOB_STATUSES} | figures.jobs_by_status
            for status, count in counts.items():
                jobs.add_metric([status], count)
            yield jobs
        if figures.blocks_extracted is not None:
            yield GaugeMetricFamily("amp_job_blocks_extracted", "Blocks written by the jobs on record "
                                    "(per job, its furthest table)", value=figures.blocks_extracted)
            yield GaugeMetricFamily(
                "amp_job_progress_blocks_per_second",
                f"Blocks written per second by jobs, over the last {RATE_WINDOW_S:g}s of scrapes",
                value=_rate(then.blocks, now.blocks, now.at - then.at),
            )

    def _durable_families(self) -> Iterator[Metric]:
        outcomes: dict[str, int] = getattr(self.durable, "invocation_outcomes", None) or {}
        invocations = CounterMetricFamily("amp_durable_invocations", "Durable invocations by outcome",
                                          labels=["outcome"])
        for outcome, count in list(outcomes.items()):
            invocations.add_metric([str(outcome)], count)
        yield invocations


def cumulative_buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (last = overflow) -> Prometheus' cumulative `(le, count)` pairs."""
    buckets, running = [], 0
    for bound, count in zip([*(str(float(b)) for b in DURATION_BUCKETS_S), "+Inf"], counts):
        running += count
        buckets.append((bound, running))
    return buckets


def _rate(before: int | None, now: int | None, seconds: float) -> float:
    if before is None or now is None or seconds <= 0:
        return 0.0
    return max(0.0, (now - before) / seconds)  # a deleted job makes the sum drop: not negative work


class Metrics:
    """The runtime's registry and collector; `await scrape()` -> the exposition text."""

    def __init__(self, *, store, tasks, durable, uptime_s: Callable[[], float]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RuntimeCollector(store=store, tasks=tasks, durable=durable, uptime_s=uptime_s)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds (Linux)
        PlatformCollector(registry=self.registry)  # python_info
        self.store = store

    async def scrape(self) -> bytes:
        figures = await gather_store_figures(self.store)
        return self.collector.render(figures, self.registry)
