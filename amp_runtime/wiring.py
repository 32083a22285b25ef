"""The composition root: every service built in one place, in the order they depend on each other.

Each service gets what it uses as constructor arguments (config, store, a sibling service or a
narrow callable); none gets the `Runtime`. The runtime runs what this returns (root nursery,
signals, drain, HTTP) and hands `Services.by_family()` to `create_app`, so each family's routes
are given their own service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from .cluster.service import ClusterService
from .config import Config
from .core.logs import LogRing
from .core.store import Store
from .durable.service import DurableService
from .jobs.service import JobService
from .meta_routes import ApiDocs
from .observability.metrics import Metrics
from .observability.service import ObservabilityService
from .registry.service import RegistryService
from .tasks.service import ProcessInfo, TaskService


@dataclass(frozen=True)
class Services:
    """The services of one process."""

    registry: RegistryService
    tasks: TaskService
    jobs: JobService
    durable: DurableService
    cluster: ClusterService
    observability: ObservabilityService
    api_docs: ApiDocs

    def running(self) -> list[Any]:
        """The services the runtime starts, in this order; it drains them side by side."""
        return [self.registry, self.tasks, self.jobs, self.durable, self.cluster]

    def by_family(self) -> dict[str, Any]:
        """The service each API family's routes are handed."""
        return {
            "tasks": self.tasks,
            "registry": self.registry,
            "reporting": self.registry,
            "jobs": self.jobs,
            "durable": self.durable,
            "observability": self.observability,
            "meta": self.api_docs,
            "cluster": self.cluster,
        }


def build_services(
    config: Config,
    store: Store,
    *,
    version: str,
    uptime_s: Callable[[], float],
    logs: LogRing,
    bound_urls: Callable[[], list[str]],
    draining: Callable[[], bool] = lambda: False,
) -> Services:
    """`uptime_s`: seconds since the process started; `logs`: the ring `GET /logs` reads;
    `bound_urls`: where the HTTP server listens (empty until it has bound: a peer advertises
    it in the peer directory); `draining`: whether the process is stopping (for `/ready`)."""
    tasks = TaskService(config, store, process=ProcessInfo(version, uptime_s, logs))
    registry = RegistryService(config, store, task_snapshot=tasks.snapshot)
    cluster = ClusterService(config, store, tasks=tasks, bound_urls=bound_urls)
    tasks.route_task = cluster.route_task  # a peer with more room may answer a task (PostgreSQL)
    jobs = JobService(config, store, tasks=tasks, live_workers=registry.live_workers)
    durable = DurableService(config, store, bound_urls=bound_urls)
    metrics = Metrics(store=store, tasks=tasks, durable=durable, uptime_s=uptime_s)
    return Services(
        registry=registry,
        tasks=tasks,
        jobs=jobs,
        durable=durable,
        cluster=cluster,
        observability=ObservabilityService(metrics, tasks),
        api_docs=ApiDocs(enabled=config.http.openapi_enabled, version=version,
                         not_ready=partial(not_ready, store, draining)),
    )


def not_ready(store: Store, draining: Callable[[], bool]) -> str | None:
    """Why a balancer should send this process nothing now, or None."""
    if draining():
        return "the process is draining"
    # Public: which of the two, not the store's own error (it names hosts); /health has that.
    return None if store.unavailable is None else "the store is unavailable"
