"""The cluster service: a process's role and the glue between the cluster and the families.

- `[cluster] join` set: a node (`NodeAgent`): it reports its workers to the coordinator and
  runs the jobs the coordinator assigns over its channel.
- `[cluster] key` set and no `join`: a coordinator that accepts nodes (`Coordinator`,
  `NodeTable`, `Forwarder`): `POST /task` may be forwarded to a node, jobs may be assigned
  to a node's workers. It runs local workers too, as any process does.
- Neither: a single process; this service does nothing.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import trio
from quart import Response

from ..core.actor import supervise
from ..core.http import ApiError
from ..core.service import ServiceBase
from .agent import NodeAgent
from .auth import ClusterKeyAuth
from .coordinator import Coordinator
from .forward import Forwarder, NodeUnreachable
from .nodes import NodeOf, NodeTable, Picked
from .routes import blueprint


class ClusterService(ServiceBase):
    def __init__(self, config, *, tasks, bound_urls: Callable[[], list[str]]):
        """`tasks`: the task service (local workers, their room, job slots on a node);
        `bound_urls`: where this process's HTTP server listens (a node advertises it)."""
        super().__init__(config, store=None)  # the cluster keeps nothing in the store
        cluster = self.config.cluster
        self.tasks = tasks
        self.is_node = bool(cluster.join)
        self.accepts_nodes = bool(cluster.key) and not self.is_node
        self.agent = NodeAgent(config, tasks, bound_urls) if self.is_node else None
        self.table = NodeTable(mailbox_size=self.config.actors.mailbox_size) if self.accepts_nodes else None
        self.coordinator = Coordinator(config, self.table, tasks.worker_ids()) if self.accepts_nodes else None
        self.forwarder: Forwarder | None = None

    def mount(self, app):
        """Add the node channel route to the app and accept the cluster key; returns the ASGI
        app to serve. Called by the runtime before it serves HTTP."""
        app.register_blueprint(blueprint)
        key = self.config.cluster.key
        return ClusterKeyAuth(app, cluster_key=key, api_key=self.config.auth.api_key) if key else app

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the node table (coordinator) or the node agent; cancelled at shutdown."""
        async with trio.open_nursery() as nursery:
            if self.accepts_nodes:
                restarts = self.config.actors.max_restarts_per_minute
                await nursery.start(partial(supervise, self.table, max_restarts_per_minute=restarts))
                self.forwarder = Forwarder(self.table, self.config.cluster.key, self.config.cluster.connect_timeout_s)
                self.coordinator.on_leave = self.forwarder.node_left
            if self.agent is not None:
                nursery.start_soon(self.agent.run)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                if self.forwarder is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await self.forwarder.aclose()

    def stop_accepting(self) -> None:
        if self.agent is not None:
            self.agent.stop_accepting()

    async def drain(self) -> None:
        if self.agent is not None:
            await self.agent.drain()

    # -- jobs --------------------------------------------------------------------------------
    async def run_remote_job(self, env, handle, record) -> None:
        await self.coordinator.run_remote_job(env, handle, record)

    def handed_back(self) -> list[str]:
        """Workers of nodes that drained and handed their jobs back: move those jobs now."""
        return sorted(self.coordinator.handed_back)

    def job_liveness(self, registry_live: list[str]) -> tuple[list[str], list[str]]:
        """(live workers, workers of connected nodes). A node's workers are live while its
        channel is open, whatever the registry still lists: a killed node drops at once."""
        remote = self.coordinator.remote_workers()
        known = self.coordinator.known_remote
        live = [w for w in registry_live if w not in known] + remote
        return live, remote

    # -- tasks -------------------------------------------------------------------------------
    async def route_task(self, body, spec) -> Response | None:
        """The node's answer to a `POST /task` forwarded there, or None to run it here: no
        node has more room than this process for the function's group (or the client named
        a local worker, or this process is in maintenance)."""
        tasks = self.tasks
        if self.forwarder is None or tasks.maintenance or body.worker in tasks.workers:
            return None
        local_room = _local_room(tasks, spec.group)
        if body.worker is not None:
            url = await self.table.ask(NodeOf(body.worker))
            if url is None:
                return None  # unknown everywhere: the local validation says so
            picked = Picked(url, body.worker, 0, counted=False)
        else:
            picked = await self.forwarder.pick(spec.group, above=local_room)
            if picked is None:
                return None

        async def another(exclude: frozenset[str]) -> Picked | None:
            return None if body.worker is not None else await self.forwarder.pick(spec.group, exclude, local_room)

        try:
            return await self.forwarder.forward(picked, body, another)
        except NodeUnreachable as exc:
            if local_room is not None:
                return None
            raise ApiError(503, "NODE_UNREACHABLE", f"no node serving group {spec.group!r} could be reached ({exc})",
                           headers={"Retry-After": str(self.config.tasks.retry_after_s)}) from None


def _local_room(tasks, group: str) -> int | None:
    rooms = [w.state.free - w.state.queued for w in tasks.workers.values()
             if group in w.config.groups and not w.state.maintenance]
    return max(rooms) if rooms else None
