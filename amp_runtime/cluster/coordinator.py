"""The coordinator's side of the node channel: connected nodes, their slots, their jobs.

Each node keeps one WebSocket open to `/ws/cluster/node`. While it is open the node is a
member: its workers are routed to (after the node's own `/ws/slots` reports their slots) and
can be assigned jobs. It closes when the node goes (a killed node's socket closes at once), or
when the node is silent for two heartbeats; the node then leaves the table, so no task is sent
to it afterwards. After one silent heartbeat it already gets no new tasks.

A job assigned to a node's worker is run by `run_remote_job`, the coordinator-side twin of
the local runner: it sends `Assign`, relays the node runner's scheduler questions and
progress to the local scheduler and progress writer, and sends `StopJob`/`PauseJob`/`CancelJob`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from ..jobs import store as jobs_store
from ..jobs.messages import Finished
from ..jobs.runner import RunnerEnv, RunnerHandle
from ..jobs.store import JobRecord
from . import wire
from .wire import leaf
from .auth import bearer
from .nodes import Join, Leave, NodeTable, SlotsLost, SlotsPushed

log = logging.getLogger("amp_runtime.cluster")


class _Slots(msgspec.Struct):
    worker: str
    free: int
    total: int
    queued: int
    maintenance: bool


_decode_slots = msgspec.json.Decoder(_Slots).decode


@dataclass(eq=False)
class NodeLink:
    """One connected node: its outbox (drained by the channel's writer) and its jobs' inboxes."""

    url: str
    workers: list[str]
    outbox: trio.MemorySendChannel
    inboxes: dict[int, trio.MemorySendChannel] = field(default_factory=dict)

    def send_nowait(self, msg) -> None:
        try:
            self.outbox.send_nowait(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the node is gone; the job watch moves its jobs


class Coordinator:
    """Connected nodes by URL. Only the channel handlers add or remove links."""

    def __init__(self, config, table: NodeTable, local_workers: list[str]):
        """`local_workers`: this process's own worker ids (a node may not claim them)."""
        self.config = config
        self.local_workers = local_workers
        self.table = table
        self._links: dict[str, NodeLink] = {}
        self._changed = trio.Event()
        self.known_remote: set[str] = set()  # every worker id a node ever announced
        self.handed_back: set[str] = set()  # workers of nodes that drained, until they join again
        self.on_leave = lambda url: None  # the forwarder stops waiting for a node that left

    # -- membership ------------------------------------------------------------------------
    def remote_workers(self) -> list[str]:
        """Workers of connected nodes, except those of a node that is leaving."""
        return [w for link in self._links.values() for w in link.workers if w not in self.handed_back]

    def link_for(self, worker: str) -> NodeLink | None:
        return next((link for link in self._links.values() if worker in link.workers), None)

    async def wait_link(self, worker: str) -> NodeLink:
        while (link := self.link_for(worker)) is None:
            await self._changed.wait()
        return link

    def _set(self, url: str, link: NodeLink | None) -> None:
        if link is None:
            self._links.pop(url, None)
        else:
            self._links[url] = link
        self._changed.set()
        self._changed = trio.Event()

    # -- one node's channel ----------------------------------------------------------------
    async def serve_node(self, ws) -> None:
        """Run one accepted node channel until it closes, goes silent, or we shut down.
        `ws` is the Quart websocket object (already accepted)."""
        heartbeat = self.config.registry.heartbeat_s
        hello = None
        with trio.move_on_after(max(5.0, 2 * heartbeat)):
            try:
                hello = wire.decode_from_node(await ws.receive())
            except msgspec.MsgspecError:
                pass
        if not isinstance(hello, wire.Hello):
            log.warning("cluster: a node connected without saying hello; closing")
            return
        local = set(self.local_workers)
        clash = [w.id for w in hello.workers
                 if w.id in local or (self.link_for(w.id) or hello).url != hello.url]
        if clash:
            log.error("cluster: node %s refused: worker id(s) %s already in the cluster", hello.url, ", ".join(clash))
            await ws.send(wire.encode(wire.Welcome(heartbeat_s=-1)).decode())
            return
        outbox_send, outbox_recv = trio.open_memory_channel(math.inf)
        link = NodeLink(hello.url, [w.id for w in hello.workers], outbox_send)
        old = self._links.get(hello.url)
        if old is not None:
            old.outbox.close()  # a reconnect replaced it
        self.known_remote.update(link.workers)
        self.handed_back.difference_update(link.workers)
        await ws.send(wire.encode(wire.Welcome(heartbeat_s=heartbeat)).decode())
        await self.table.ask(Join(hello.url, hello.workers))
        self._set(hello.url, link)
        log.info("cluster: node %s joined with worker(s) %s", hello.url, ", ".join(link.workers))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, ws, outbox_recv, nursery.cancel_scope)
                nursery.start_soon(self._watch_slots, hello.url)
                await self._read(ws, link, heartbeat)
                nursery.cancel_scope.cancel()
        finally:
            outbox_send.close()
            for inbox in link.inboxes.values():
                inbox.close()
            if self._links.get(hello.url) is link:
                self._set(hello.url, None)
                self.table.tell_nowait(Leave(hello.url))
                self.on_leave(hello.url)
                log.info("cluster: node %s left", hello.url)

    async def _read(self, ws, link: NodeLink, heartbeat_s: float) -> None:
        """Route the node's messages. Silent for one heartbeat (it beats twice per heartbeat):
        no more tasks go to it; silent for two: it is dropped."""
        while True:
            with trio.move_on_after(heartbeat_s) as quiet:
                raw = await ws.receive()
            if quiet.cancelled_caught:
                self.table.tell_nowait(SlotsLost(link.url))  # routable again at its next slots push
                with trio.move_on_after(heartbeat_s) as silent:
                    raw = await ws.receive()
                if silent.cancelled_caught:
                    log.warning("cluster: node %s silent for %.1fs; dropping it", link.url, 2 * heartbeat_s)
                    return
            try:
                msg = wire.decode_from_node(raw)
            except msgspec.MsgspecError as exc:
                log.warning("cluster: node %s sent a bad message (%s); dropping it", link.url, exc)
                return
            if isinstance(msg, wire.Leaving):
                self.handed_back.update(link.workers)
                link.send_nowait(wire.Left())
                log.info("cluster: node %s is draining; its jobs move to other workers now", link.url)
                continue
            job_id = msg.row.job_id if isinstance(msg, wire.Progress) else getattr(msg, "job_id", None)
            if job_id is None:
                continue  # a beat
            inbox = link.inboxes.get(job_id)
            if inbox is not None:
                inbox.send_nowait(msg)
            elif not isinstance(msg, wire.Progress):
                link.send_nowait(wire.CancelJob(job_id, msg.attempt))  # a run we no longer own

    @staticmethod
    async def _write(ws, outbox: trio.MemoryReceiveChannel, scope: trio.CancelScope) -> None:
        async for msg in outbox:
            await ws.send(wire.encode(msg).decode())
        scope.cancel()  # replaced by a newer connection of the same node

    async def _watch_slots(self, url: str) -> None:
        """Follow the node's /ws/slots pushes into the node table; reconnect while it is a member."""
        ws_url = "ws" + url[4:] + "/ws/slots" if url.startswith("http") else url + "/ws/slots"
        headers = list(bearer(self.config.cluster.key).items())
        while True:
            try:
                try:
                    await self._follow_slots(url, ws_url, headers)
                except Exception as raised:  # trio-websocket may wrap it in a group
                    raise leaf(raised) from None
            except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, msgspec.DecodeError) as exc:
                log.warning("cluster: slots of node %s unavailable (%s); retrying", url, type(exc).__name__)
            self.table.tell_nowait(SlotsLost(url))
            await trio.sleep(1.0)

    async def _follow_slots(self, url: str, ws_url: str, headers) -> None:
        async with open_websocket_url(ws_url, extra_headers=headers, disconnect_timeout=1,
                                      connect_timeout=self.config.cluster.connect_timeout_s) as ws:
            while True:
                state = _decode_slots(await ws.get_message())
                await self.table.tell(SlotsPushed(url, state.worker, state.free, state.total,
                                                  state.queued, state.maintenance))

    # -- jobs on nodes ---------------------------------------------------------------------
    async def run_remote_job(self, env: RunnerEnv, handle: RunnerHandle, record: JobRecord) -> None:
        """`run_job` for a worker on a node. Waits for the node when it is not connected (the
        job watch moves the job if it stays away); a dropped channel re-assigns the run when
        the node comes back. Cancelled (job moved, stopped early, or shutdown): the node is
        told to cancel its run."""
        try:
            with handle.cancel_scope:
                if handle.previous is not None:
                    await handle.previous.done.wait()
                while not handle.pause_requested.is_set():
                    link = await self.wait_link(record.node_id)
                    if await self._drive(env, handle, record, link):
                        return
        finally:
            handle.done.set()

    async def _drive(self, env: RunnerEnv, handle: RunnerHandle, record: JobRecord, link: NodeLink) -> bool:
        """One assignment over one connection; True once the run finished."""
        inbox_send, inbox = trio.open_memory_channel(math.inf)
        link.inboxes[record.id] = inbox_send
        finished = False
        if self._links.get(link.url) is not link:
            del link.inboxes[record.id]
            return False  # it left between wait_link and now: wait for it again
        try:
            link.send_nowait(wire.Assign(record, handle.attempt))
            handle.extracting = True  # the node has it: a pause is relayed, not a cancel
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._relay_wind_down, handle, link, record.id)
                async for msg in inbox:
                    if not isinstance(msg, wire.Progress) and msg.attempt != handle.attempt:
                        continue  # from a run of this job the node had before this one
                    finished = await self._answer(env, link, record.id, handle.attempt, msg)
                    if finished:
                        break
                nursery.cancel_scope.cancel()
            return finished
        finally:
            handle.extracting = False
            if link.inboxes.get(record.id) is inbox_send:
                del link.inboxes[record.id]
            if not finished:
                link.send_nowait(wire.CancelJob(record.id, handle.attempt))

    @staticmethod
    async def _relay_wind_down(handle: RunnerHandle, link: NodeLink, job_id: int) -> None:
        await handle.wake.wait()
        if handle.stop_requested.is_set():
            link.send_nowait(wire.StopJob(job_id, handle.attempt))
        else:
            link.send_nowait(wire.PauseJob(job_id, handle.attempt))

    @staticmethod
    async def _answer(env: RunnerEnv, link: NodeLink, job_id: int, attempt: int, msg) -> bool:
        match msg:
            case wire.Progress(row=row):
                await env.progress.report(row)
            case wire.Ask(msg=question):
                answer = await env.ask(question)
                link.send_nowait(wire.Answer(job_id, attempt, answer if isinstance(answer, bool) else None))
                return isinstance(question, Finished)
            case wire.Flush():
                await env.progress.flush()
                link.send_nowait(wire.Answer(job_id, attempt))
            case wire.ReadProgress():
                rows = await env.store.read(jobs_store.progress_of, job_id)
                link.send_nowait(wire.ProgressRows(job_id, attempt, rows))
            case wire.Released():
                return True  # paused on the node: the job keeps its status
        return False
