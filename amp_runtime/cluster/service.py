"""The cluster service: task routing between peers on one PostgreSQL store.

A cluster runs on PostgreSQL; DuckDB is the one-process default. On DuckDB this service does
nothing (every task runs here). On PostgreSQL every process is a peer: it keeps its row in the
peer directory (`directory.PeerDirectory`), follows the other live peers' slots into the node
table (`nodes.PeerTable`, `slots.watch_slots`) and answers `POST /task` on the peer with the
most room for the function's group, this one included (`forward.Forwarder`). Jobs, the
registry and durable workers are shared through the store by their own services.
"""

from __future__ import annotations

import logging
from typing import Callable

import trio
from quart import Response

from ..core.http import ApiError
from ..core.service import ServiceBase
from .auth import INCOMING, PeerGate, bearer
from .directory import PeerDirectory
from .forward import Forwarder, PeerUnreachable
from .peers import PeerTable, Picked, WorkerInfo

log = logging.getLogger("amp_runtime.cluster")


class ClusterService(ServiceBase):
    def __init__(self, config, store, *, tasks, bound_urls: Callable[[], list[str]]):
        """`tasks`: the task service (local workers and their room); `bound_urls`: where this
        process's HTTP server listens (empty until it has bound; a peer advertises the first
        unless `[cluster] advertise_url` is set)."""
        super().__init__(config, store)
        self.tasks = tasks
        self.bound_urls = bound_urls
        self.routing = store.backend.name == "postgres"
        self.table = PeerTable()
        self._forwarder: Forwarder | None = None
        self._url_ready = trio.Event()
        self.directory: PeerDirectory | None = None  # built by `run` on PostgreSQL

    @property
    def forwarder(self) -> Forwarder | None:
        """The forwarder the current request may use: None while no other peer is in the table,
        and for a request another peer forwarded here. Then the task runs here, and the tasks
        hot path (which steps aside while there is a forwarder) may answer it."""
        if not len(self.table) or INCOMING.get().forwarded:
            return None
        return self._forwarder

    def url(self) -> str:
        """Where the other peers reach this one."""
        return (self.config.cluster.advertise_url or self.bound_urls()[0]).rstrip("/")

    def mount(self, app):
        """The ASGI app to serve: a peer accepts the cluster key and marks forwarded requests.
        Called by the runtime before it serves HTTP."""
        if not self.routing:
            return app
        return PeerGate(app, cluster_key=self.config.cluster.key, api_key=self.config.auth.api_key,
                        ready=self.directory.announced if self.directory is not None else None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the peer directory and its slots watches (PostgreSQL); cancelled at shutdown."""
        if not self.routing:
            if self.config.cluster.key:
                log.warning("cluster: [cluster] key is unused: on DuckDB this process has no peers "
                            "(a cluster runs on PostgreSQL: [store] url)")
            task_status.started()
            await trio.sleep_forever()
        if self.config.cluster.join:
            log.warning("cluster: [cluster] join is ignored: on PostgreSQL every process with the same "
                        "[store] url is a peer")
        cluster = self.config.cluster
        self._forwarder = Forwarder(self.table, cluster.key, cluster.connect_timeout_s,
                                    self.config.http.keep_alive_s)
        workers = [WorkerInfo(w.id, list(w.groups), w.slots, w.max_queue) for w in self.config.workers]
        self.directory = PeerDirectory(self.config, self.store, self.table, self._forwarder, workers=workers,
                                       url=self.url, watch_headers=bearer(cluster.key) or bearer(self.config.auth.api_key))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.directory.run, self._url_ready)
                nursery.start_soon(self._wait_bound)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):  # bounded: idle sockets only
                await self._forwarder.aclose()

    async def _wait_bound(self) -> None:
        while not self.bound_urls():  # the HTTP server binds after the services start
            await trio.sleep(0.02)
        self._url_ready.set()

    def stop_accepting(self) -> None:
        """Leave the peer directory now: the others stop routing here while this one drains."""
        if self.directory is not None:
            self.directory.leave()

    async def drain(self) -> None:
        if self.directory is not None:
            await self.directory.left()

    # -- tasks -------------------------------------------------------------------------------
    async def route_task(self, body, spec) -> Response | None:
        """The answer of the peer a `POST /task` was forwarded to, or None to run it here: no
        peer has more room than this process for the function's group (or the client named a
        local worker, or another peer forwarded it here, or this process is in maintenance).
        Deciding and (on None) admitting here happen without a checkpoint between: a burst
        sees each admission's room. A task naming another peer's worker goes to that peer
        (`_route_pinned`)."""
        tasks = self.tasks
        if self._forwarder is None or INCOMING.get().forwarded or tasks.maintenance or body.worker in tasks.workers:
            return None
        if body.worker is not None:
            return await self._route_pinned(body)
        forwarder = self.forwarder
        if forwarder is None:
            return None
        local_room = _local_room(tasks, spec.group)
        picked = self.table.pick(spec.group, above=local_room)
        if picked is None:
            return None

        def another(exclude: frozenset[str]) -> Picked | None:
            return self.table.pick(spec.group, exclude, local_room)

        try:
            return await forwarder.forward(picked, body, another)
        except PeerUnreachable as exc:
            if local_room is not None:
                return None
            raise ApiError(503, "NODE_UNREACHABLE", f"no peer serving group {spec.group!r} could be reached ({exc})",
                           headers={"Retry-After": str(self.config.tasks.retry_after_s)}) from None

    async def _route_pinned(self, body) -> Response | None:
        """A task naming another peer's worker: forwarded to the address the directory has for
        it now. Unknown or refused, the directory is read again first (that peer may have come
        back elsewhere); an address that refuses is tried no more."""
        tried: set[str] = set()
        while True:
            url = self.table.node_of(body.worker)
            if url is None or url in tried:
                await self.directory.refresh_now()
                url = self.table.node_of(body.worker)
            if url is None or url in tried:
                if not tried and not self.table.claims(body.worker):
                    return None  # unknown everywhere: the local validation says so
                where = ", ".join(sorted(tried)) or "it refused a connection"
                raise ApiError(503, "NODE_UNREACHABLE", f"the peer running worker {body.worker!r} cannot be "
                               f"reached ({where})", headers={"Retry-After": str(self.config.tasks.retry_after_s)})
            tried.add(url)
            try:
                return await self._forwarder.forward(Picked(url, body.worker, 0, counted=False), body,
                                                     lambda exclude: None)
            except PeerUnreachable:
                continue


def _local_room(tasks, group: str) -> int | None:
    rooms = [w.state.free - w.state.queued for w in tasks.workers.values()
             if group in w.config.groups and not w.state.maintenance]
    return max(rooms) if rooms else None
