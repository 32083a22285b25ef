"""The registry service: one registry behind both worker APIs, the own workers' heartbeats,
expiry by timer, machine-stats time series and their retention, and reporting-API tokens.

The records live in this process's registry actor on DuckDB (records.LocalRecords) and in the
shared table on PostgreSQL, where every process on the store is a peer (shared.SharedRecords)."""

from __future__ import annotations

import hmac
import logging
import math
import time
from functools import partial
from typing import Awaitable, Callable

import trio

from .. import build_info
from ..config import parse_bind
from ..core.clock import naive_utc, utcnow
from ..core.http import ApiError
from ..core.ids import id_list_problems, worker_id_problem
from ..core.service import ServiceBase
from . import tokens as jwt
from . import store as sql
from ..core.actor import is_outage, log_failure
from ..core.availability import outage_silence_s
from .actor import Register, Report, Unregister
from .models import (
    AGGREGATIONS,
    API_VERSION,
    METRIC_CATEGORIES,
    METRICS,
    ActivityData,
    ActivitySeries,
    AggregationValues,
    MetricKeysData,
    MetricsCategory,
    MetricStats,
    StatsData,
    StatsRequest,
    StatusReportRequest,
    WorkerInfo,
    WorkerRecord,
    WorkersFilter,
    WorkerStats,
    stats_rows,
    tags_match,
)
from .records import LocalRecords
from .shared import SharedRecords
from .stats import MachineSampler

log = logging.getLogger("amp_runtime.registry")

RETENTION_CHECK_S = 600.0
# The size budget of the stats: full resolution for the last hour, one row per series and minute
# before (README, "Worker registry").
FULL_RESOLUTION_S = 3600
ROLLUP_S = 60
EXPIRED_SHOWN = 20  # ids named in the expiry log line


def report_ts(timestamp: float) -> float:
    """Seconds or milliseconds (the reference agent sends ms): ≥ 10^12 is milliseconds."""
    return timestamp / 1000.0 if timestamp >= 1e12 else float(timestamp)


class RegistryService(ServiceBase):
    def __init__(self, config, store, *, task_snapshot: Callable[[], Awaitable[list]]):
        """`task_snapshot`: the task service's `snapshot` (the own workers' running tasks)."""
        super().__init__(config, store)
        self._task_snapshot = task_snapshot
        self.settings = self.config.registry
        actors = self.config.actors
        self.records: LocalRecords | SharedRecords = (
            SharedRecords(self.store) if self.store.backend.name == "postgres" else
            LocalRecords(self.store, mailbox_size=actors.mailbox_size, ask_timeout=actors.ask_timeout_s,
                         max_restarts_per_minute=actors.max_restarts_per_minute)
        )
        self.own_ids = [w.id for w in self.config.workers]
        # Peers see a killed peer's own workers expire once they are silent for `liveness_s` (as
        # its jobs move), not after the reporting API's default timeout meant for outside agents.
        self._own_timeout_s = math.ceil(self.settings.liveness_s) if isinstance(self.records, SharedRecords) else None
        self.jwt_secret = self.config.auth.jwt_secret
        self._accepting = True
        self._own_ip = parse_bind(self.config.server.bind)[0]

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the records' keeper, register the own workers, then run the timers until cancelled."""
        async with trio.open_nursery() as nursery:
            await self.records.start(nursery)
            if not self.jwt_secret:
                self.jwt_secret = await self.store.write(sql.set_secret_once, "jwt", jwt.new_secret())
            build = await trio.to_thread.run_sync(build_info.current)  # from a checkout: runs git once
            info = WorkerInfo(version=build.version, commit_sha=build.commit_sha,
                              commit_timestamp=build.commit_timestamp, build_date=build.build_date)
            for worker_id in self.own_ids:
                await self.register(worker_id, ip=self._own_ip, info=info, timeout=self._own_timeout_s)
            sampler = await trio.to_thread.run_sync(MachineSampler)
            retention_s = self.settings.stats_retention_days * 86400
            nursery.start_soon(self._every, self.settings.expiry_check_s, self._expire)
            nursery.start_soon(self._every, self.settings.heartbeat_s, partial(self._heartbeat, sampler))
            nursery.start_soon(partial(self._every, min(RETENTION_CHECK_S, retention_s), self.apply_retention,
                                       first_now=True))
            task_status.started()

    def stop_accepting(self) -> None:
        self._accepting = False  # the own workers stop heartbeating

    async def drain(self) -> None:
        for worker_id in self.own_ids:
            try:
                await self.unregister(worker_id)
            except Exception as exc:  # e.g. the store is away: the worker expires instead
                log_failure(log, exc, "registry: unregistering %s on the way out failed; it expires instead", worker_id)

    async def _every(self, period_s: float, step, *, first_now: bool = False) -> None:
        """Run `step` every `period_s` until cancelled; a failing step is logged, not fatal."""
        if not first_now:
            await trio.sleep(period_s)
        while True:
            try:
                if await step() is False:
                    return
            except ApiError as exc:  # e.g. the store is unavailable (a coded 503): the next round retries
                if not is_outage(exc):
                    log.warning("registry: %s failed: %s", getattr(step, "__name__", step), exc)
            except Exception as exc:
                log_failure(log, exc, "registry: %s failed", getattr(step, "__name__", step))
            await trio.sleep(period_s)

    async def _expire(self) -> None:
        if self.store.available_for() < outage_silence_s(self.settings.liveness_s, self.settings.heartbeat_s):
            return  # just back from a store outage: the silence is the outage's, not the workers'
        expired = await self.records.expire(naive_utc(utcnow()))
        if expired:
            shown = ", ".join(expired[:EXPIRED_SHOWN]) + (", ..." if len(expired) > EXPIRED_SHOWN else "")
            log.info("registry: %d worker(s) expired: %s", len(expired), shown)

    async def _heartbeat(self, sampler: MachineSampler) -> bool:
        """One status report per own worker: machine readings and its first running task."""
        if not self._accepting:
            return False
        stats = sampler.sample(await trio.to_thread.run_sync(sampler.read_devices))  # see MachineSampler
        running = {s.worker: s.running for s in await self._task_snapshot()}
        for worker_id in self.own_ids:
            current = running.get(worker_id) or []
            await self.status_report(
                StatusReportRequest(worker=worker_id, timestamp=time.time(),
                                    task=current[0] if current else None, machine_stats=stats),
                ip=self._own_ip, timeout_s=self._own_timeout_s,
            )
        return True

    async def apply_retention(self) -> None:
        """Stats older than `[registry] stats_retention_days` go; those older than `FULL_RESOLUTION_S`
        are rolled up (the size budget). Run every `RETENTION_CHECK_S`."""
        now = time.time()
        await self.store.write(sql.delete_stats_before, now - self.settings.stats_retention_days * 86400)
        await self.store.write(sql.roll_up_stats, (now - FULL_RESOLUTION_S) // ROLLUP_S * ROLLUP_S, ROLLUP_S)

    # -- the jobs service's view -------------------------------------------------------
    async def live_workers(self, max_age_s: float | None = None) -> list[str]:
        """Ids of workers registered, not expired, with a heartbeat younger than `max_age_s`
        (default `[registry] liveness_s`)."""
        max_age = self.settings.liveness_s if max_age_s is None else max_age_s
        return await self.records.live_ids(naive_utc(utcnow()), max_age)

    # -- changes -----------------------------------------------------------------------
    def _check_worker(self, worker: str) -> None:
        problem = worker_id_problem(worker, self.config.http.max_id_length)
        if problem is not None:
            raise ApiError(400, "INVALID_WORKER_ID", problem)

    def _check_worker_and_tags(self, worker: str, **fields: list[str] | None) -> None:
        """One 400 listing the id's and the tags' problems together."""
        try:
            self._check_tags(**fields)
        except ApiError as err:
            problem = worker_id_problem(worker, self.config.http.max_id_length)
            if problem is not None:
                err.problems.insert(0, problem)
                err.message = "; ".join(err.problems)
            raise
        self._check_worker(worker)

    def _check_tags(self, **fields: list[str] | None) -> None:
        limits = self.config.http
        problems = [problem for name, tags in fields.items() if tags is not None
                    for problem in id_list_problems(name, tags, limits.max_tags, limits.max_id_length)]
        if problems:
            raise ApiError(400, "INVALID_REQUEST", "; ".join(problems), problems=problems)

    async def register(
        self, worker: str, *, timeout: int | None = None, ip: str | None = None, info: WorkerInfo | None = None,
        queues: list[str] | None = None, tags: list[str] | None = None, system_tags: list[str] | None = None,
    ) -> None:
        """Register (or re-register) a worker; returns once the record is durable (and only then shown)."""
        self._check_worker_and_tags(worker, queues=queues, tags=tags, system_tags=system_tags)
        if timeout is not None and timeout <= 0:
            raise ApiError(400, "INVALID_REQUEST", "timeout must be a positive number of seconds")
        await self.records.register(Register(
            worker=worker, now=naive_utc(utcnow()), timeout_s=timeout or self.settings.default_timeout_s,
            ip=ip, info=info, queues=queues, tags=tags, system_tags=system_tags,
        ))

    async def status_report(self, req: StatusReportRequest, *, ip: str | None = None, timeout_s: int | None = None) -> None:
        """Persist the updated record with the report's stats and activity in one go; then it is shown.
        `timeout_s`: the timeout of a worker this report registers (again); default `default_timeout_s`."""
        self._check_worker_and_tags(req.worker, queues=req.queues, tags=req.tags, system_tags=req.system_tags)
        ts = report_ts(req.timestamp)
        report = Report(
            worker=req.worker, now=naive_utc(utcnow()), default_timeout_s=timeout_s or self.settings.default_timeout_s,
            ip=ip, task=req.task, queue=req.queue, queues=req.queues, tags=req.tags, system_tags=req.system_tags,
        )
        readings = stats_rows(req.machine_stats) if req.machine_stats is not None else []
        await self.records.report(
            report,
            stats=[(req.worker, metric, variant, ts, value) for metric, variant, value in readings],
            activity=[(req.worker, ts, req.task is not None)],
        )

    async def unregister(self, worker: str) -> None:
        self._check_worker(worker)
        await self.records.unregister(Unregister(worker))

    # -- reads -------------------------------------------------------------------------
    async def get(self, worker: str) -> WorkerRecord | None:
        return await self.records.get(worker)

    async def all_records(self) -> list[WorkerRecord]:
        return await self.records.all()

    async def registered(self, filters: WorkersFilter, *, default_last_seen: int | None) -> list[WorkerRecord]:
        """Registered, unexpired workers matching the reporting API's filters, by id."""
        last_seen = parse_last_seen(filters.last_seen, default_last_seen)
        return sorted(
            (r for r in await self.records.live_records(naive_utc(utcnow()), last_seen)
             if tags_match(filters.tags, r.tags)
             and tags_match(filters.system_tags, r.system_tags)),
            key=lambda r: r.id,
        )

    async def metric_keys(self, worker_ids: list[str] | None) -> MetricKeysData:
        found = set(await self.store.read(sql.metric_keys, worker_ids))
        return MetricKeysData([
            MetricsCategory(name, [m for m in metrics if m in found])
            for name, metrics in METRIC_CATEGORIES.items() if found.intersection(metrics)
        ])

    async def stats(self, req: StatsRequest) -> StatsData:
        check_range(req.from_date, req.to_date, req.interval)
        wanted: dict[str, list[str]] = {}  # metric -> aggregations, in the order asked
        problems = []
        for item in req.items:
            aggregation = (item.aggregation or item.category or "avg").lower()
            if item.key not in METRICS:
                problems.append(f"items: unknown metric key {item.key!r}")
            elif aggregation not in AGGREGATIONS:
                problems.append(f"items: unknown aggregation {aggregation!r} (avg, min or max)")
            elif aggregation not in wanted.setdefault(item.key, []):
                wanted[item.key].append(aggregation)
        if not req.items:
            problems.append("items: at least one metric key is needed")
        if problems:
            raise ApiError(400, "INVALID_REQUEST", "; ".join(problems), problems=problems)
        rows = await self.store.read(partial(
            sql.stats_buckets, metrics=list(wanted), from_date=req.from_date, to_date=req.to_date,
            interval=req.interval, split_by_variant=req.split_by_variant, worker_ids=req.worker_ids,
        ))
        return StatsData(group_stats(rows, wanted, req.split_by_variant))

    async def activity(self, from_date: float, to_date: float, interval: int) -> ActivityData:
        check_range(from_date, to_date, interval)
        rows = await self.store.read(partial(sql.activity_buckets, from_date=from_date, to_date=to_date, interval=interval))
        active = [(int(b), a) for b, _, a in rows if a]
        return ActivityData(
            total=ActivitySeries([int(b) for b, _, _ in rows], [t for _, t, _ in rows]),
            active=ActivitySeries([b for b, _ in active], [a for _, a in active]),
        )

    # -- tokens ------------------------------------------------------------------------
    def login(self, access_key: str, secret_key: str, *, ttl_s: int | None = None) -> str:
        """A token for a configured client pair; raises ApiError 401 otherwise.

        An open server (no API key, no clients: loopback only) signs any pair, so the original
        clients work against it out of the box, as every other route does without credentials.
        """
        auth = self.config.auth
        known = any(
            hmac.compare_digest(c.access_key.encode(), access_key.encode())
            and hmac.compare_digest(c.secret_key.encode(), secret_key.encode())
            for c in auth.clients
        )
        if not known and (auth.api_key or auth.clients):
            raise ApiError(401, "UNAUTHORIZED", "invalid access_key or secret_key")
        return self.issue_token({"company": "amp", "company_name": "amp_runtime", "user": access_key,
                                 "user_name": access_key, "role": "user"}, ttl_s=ttl_s)

    def issue_token(self, identity: dict, *, ttl_s: int | None = None) -> str:
        """A signed token; `ttl_s` (the client's `expiration_sec`) can shorten, never extend, `jwt_ttl_s`."""
        now = int(time.time())
        ttl = self.config.auth.jwt_ttl_s if not ttl_s or ttl_s <= 0 else min(ttl_s, self.config.auth.jwt_ttl_s)
        return jwt.encode({"exp": now + ttl, "iat": now, "identity": identity, "api_version": API_VERSION,
                           "server_version": build_info.package_version()}, self.jwt_secret)

    def token_identity(self, token: str) -> dict | None:
        """The identity of a valid token (for a refresh), else None."""
        if not self.jwt_secret:
            return None
        try:
            return jwt.decode(token, self.jwt_secret).get("identity") or {}
        except jwt.InvalidToken:
            return None



def parse_last_seen(value: int | str | None, default: int | None) -> float | None:
    """Seconds, or None for no filter: absent → `default`; 0 or "none" disables."""
    if value is None:
        return default or None
    if isinstance(value, str):
        if value.strip().lower() == "none":
            return None
        try:
            value = int(value)
        except ValueError:
            raise ApiError(400, "INVALID_REQUEST", f"last_seen: expected seconds or 'none', got {value!r}") from None
    if value < 0:
        raise ApiError(400, "INVALID_REQUEST", "last_seen: must not be negative")
    return value or None


def check_range(from_date: float, to_date: float, interval: int) -> None:
    problems = []
    if interval < 1:
        problems.append("interval: the minimal value is 1")
    if to_date < from_date:
        problems.append("to_date: must not be before from_date")
    if problems:
        raise ApiError(400, "INVALID_REQUEST", "; ".join(problems), problems=problems)


def group_stats(rows: list[tuple], wanted: dict[str, list[str]], split: bool) -> list[WorkerStats]:
    """Rows (worker, metric, variant, bucket, avg, min, max), sorted, into the response shape."""
    index = {"avg": 4, "min": 5, "max": 6}
    workers: dict[str, dict[tuple[str, str], list[tuple]]] = {}
    for row in rows:
        workers.setdefault(row[0], {}).setdefault((row[1], row[2]), []).append(row)
    return [
        WorkerStats(worker, [
            MetricStats(
                metric=metric,
                variant=variant if split else None,
                dates=[int(r[3]) for r in series],
                stats=[AggregationValues(a, [r[index[a]] for r in series]) for a in wanted[metric]],
            )
            for (metric, variant), series in metrics.items()
        ])
        for worker, metrics in workers.items()
    ]
