"""The peer directory: this process's row in `peers`, and the other live peers as routing nodes.

Every process on one PostgreSQL store is a peer. Each upserts its row (URL, workers) at start
and every `[registry] heartbeat_s`, and deletes it when it drains. Each reads the table when a
NOTIFY on `amp_peers` wakes it and every heartbeat (notifications are lost across reconnects:
the table is the truth) and routes to the peers heard from within `[registry] liveness_s`:
a peer that appears joins the peer table and gets a slots watch (`slots.watch_slots`); one
whose row is gone (it drained: forwards in flight there finish) or stale (it died or hangs:
forwards still waiting there answer 502 `NODE_LEFT`) leaves it, its watch cancelled. A killed
peer is out of routing at once anyway (its /ws/slots closes) and out of the directory after
`liveness_s`. A (re)started peer's first beat deletes the rows of its earlier lives (they claim
its worker ids) and notifies; `announced` holds its HTTP answers until then (`auth.PeerGate`), and
a request that finds a pinned worker unknown or refusing reads the table at once (`refresh_now`).

The store is touched through the Store actor only. `_watches` belongs to `run`'s task.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Callable

import trio

from ..core.actor import is_outage
from ..core.availability import outage_silence_s
from ..core.notify import Listener, Wakeup
from . import store as peers_store
from .forward import Forwarder
from .peers import PeerTable, WorkerInfo
from .slots import watch_slots

log = logging.getLogger("amp_runtime.cluster")

LEAVE_TIMEOUT_S = 2.0  # a drain waits this long for its row's deletion (else it expires)
REFRESH_TIMEOUT_S = 2.0  # a request asking for a fresh view waits this long for the store


@dataclass(eq=False)
class _Watch:
    peer_id: str
    scope: trio.CancelScope


class PeerDirectory:
    def __init__(self, config, store, table: PeerTable, forwarder: Forwarder, *, workers: list[WorkerInfo],
                 url: Callable[[], str], watch_headers: dict[str, str]):
        """`url`: where the other peers reach this one (read once HTTP is bound);
        `watch_headers`: the credentials of a slots watch."""
        self.config = config
        self.store = store
        self.table = table
        self.forwarder = forwarder
        self.workers = workers
        self._url = url
        self._watch_headers = watch_headers
        self.peer_id = uuid.uuid4().hex
        self._watches: dict[str, _Watch] = {}
        self._wakeup = Wakeup()
        self._leaving = trio.Event()  # set by `leave`: stop beating, delete the row
        self._left = trio.Event()
        self.announced = trio.Event()  # the first beat was written (or failed): HTTP may answer
        self._nursery: trio.Nursery | None = None
        self._reads = 0  # refreshes started; one applies only if no later-started one has
        self._applied = 0
        self._refreshing = trio.Lock()  # requests asking for a fresh view share the reads

    async def run(self, url_ready: trio.Event) -> None:
        """Until cancelled (shutdown); the row goes on `leave` (a drain)."""
        await url_ready.wait()
        registry = self.config.registry
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            listener = Listener(self.store.backend.url, peers_store.CHANNEL, self._wakeup.set,
                                application_name="amp-runtime-listen-peers")
            nursery.start_soon(listener.run)
            nursery.start_soon(self._beat, self._url(), registry.heartbeat_s, registry.liveness_s)
            while True:
                try:
                    await self._refresh()
                except Exception as exc:  # e.g. the store is reconnecting: keep the last view
                    if not is_outage(exc):
                        log.warning("cluster: reading the peer directory failed (%s); retrying", exc)
                await self._wakeup.wait(registry.heartbeat_s)

    async def _beat(self, url: str, heartbeat_s: float, liveness_s: float) -> None:
        announce = True
        # Rows silent this long go: a peer that is only cut off comes back with its next beat.
        expired_after_s = 4 * liveness_s
        while not self._leaving.is_set():
            try:
                judged = expired_after_s if self.store.available_for() >= expired_after_s else None
                await self.store.write(peers_store.upsert_peer, self.peer_id, url, self.workers, judged, announce)
                if announce:
                    log.info("cluster: in the peer directory as %s", url)
                announce = False
            except Exception as exc:
                if not is_outage(exc):  # the store says when it is away, once
                    log.warning("cluster: heartbeat in the peer directory failed (%s); retrying", exc)
            self.announced.set()
            with trio.move_on_after(heartbeat_s):
                await self._leaving.wait()
        try:
            with trio.move_on_after(LEAVE_TIMEOUT_S):
                await self.store.write(peers_store.delete_peer, self.peer_id)
                log.info("cluster: left the peer directory")
        except Exception as exc:
            log.warning("cluster: leaving the peer directory failed (%s); the row expires instead", exc)
        finally:
            self._left.set()

    async def refresh_now(self) -> None:
        """Read the directory now (a pinned task's worker is unknown here or refused us: its
        peer may just have come back on another address); bounded, a failure keeps the view."""
        if self._nursery is None:
            return
        fresh = self._reads + 1  # a read that starts after this call answers it
        try:
            with trio.move_on_after(REFRESH_TIMEOUT_S):
                async with self._refreshing:
                    if self._applied < fresh:  # else one started after us has been applied meanwhile
                        await self._refresh()
        except Exception as exc:
            if not is_outage(exc):
                log.warning("cluster: reading the peer directory failed (%s)", exc)

    async def _refresh(self) -> None:
        self._reads += 1
        read = self._reads
        rows = await self.store.read(peers_store.other_peers, self.peer_id, self.config.registry.liveness_s)
        if read < self._applied:
            return  # a refresh started later has already applied a newer view
        self._applied = read
        nursery = self._nursery
        # Back from a store outage, every peer looks silent (nobody could beat): each gets time to
        # reconnect and beat again before it counts as dead.
        excused = self.store.available_for() < outage_silence_s(self.config.registry.liveness_s,
                                                                  self.config.registry.heartbeat_s)
        live = {row.url: row for row in rows if row.live}
        stale = {row.peer_id for row in rows if not row.live}
        for url, watch in list(self._watches.items()):
            if url not in live or live[url].peer_id != watch.peer_id:
                dead = watch.peer_id in stale
                if dead and excused:
                    continue
                self._drop(url, dead=dead)
        for url, row in live.items():
            if url not in self._watches:
                self._add(nursery, row)

    def _add(self, nursery: trio.Nursery, row: peers_store.PeerRow) -> None:
        scope = trio.CancelScope()
        self._watches[row.url] = _Watch(row.peer_id, scope)
        self.table.join(row.url, row.workers)
        nursery.start_soon(self._watch, row.url, scope)
        log.info("cluster: peer %s joined routing (worker(s) %s)", row.url, ", ".join(w.id for w in row.workers))

    def _drop(self, url: str, *, dead: bool) -> None:
        self._watches.pop(url).scope.cancel()
        self.table.leave(url)
        if dead:
            self.forwarder.node_left(url)
        else:
            self.forwarder.peer_gone(url)
        log.info("cluster: peer %s left routing (%s)", url, "silent for [registry] liveness_s" if dead else "it drained")

    async def _watch(self, url: str, scope: trio.CancelScope) -> None:
        with scope:
            await watch_slots(url, self.table, headers=self._watch_headers,
                              connect_timeout_s=self.config.cluster.connect_timeout_s,
                              on_silent=self.forwarder.node_left)

    def leave(self) -> None:
        """Stop beating and delete this peer's row (the others stop routing here at once)."""
        self._leaving.set()

    async def left(self) -> None:
        """Until the row is deleted (or that failed); bounded by `LEAVE_TIMEOUT_S`."""
        with trio.move_on_after(LEAVE_TIMEOUT_S + 0.5):
            await self._left.wait()
