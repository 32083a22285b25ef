"""The peer table: which other peer's worker gets the next task.

Not an actor: one object whose methods never await (atomic between checkpoints), because a
pick must be atomic with this process's own admission. `ClusterService.route_task` compares
the local room with `pick(..., above=local_room)` and, when nothing beats it, admits the task
here before the next checkpoint; with an ask in between, a burst read the same stale room
and piled onto one process. Touched by the cluster's tasks only (directory, slot watchers,
forwarder, route), all on the trio thread.

Peers join and leave with the directory (`join`/`leave`); each peer's `/ws/slots` pushes
arrive as `slots_pushed`. `pick` answers the peer and worker with the most room for a function
group, never one in maintenance, with a full queue, or with no slot state yet. Room is free
slots minus queued tasks minus the forwards in flight the last push cannot have counted yet
(in flight beyond what it shows busy or queued), so a burst between two pushes spreads out
instead of piling onto one peer. The forwarder says `done` when the peer answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec


class WorkerInfo(msgspec.Struct):
    """A peer's worker as the table routes to it (stored in the peer directory's row)."""

    id: str
    groups: list[str]
    slots: int
    max_queue: int


class Picked(msgspec.Struct):
    url: str
    worker: str
    room: int
    counted: bool = True  # picked by the table (so in flight until `done`), not named by the client


@dataclass(slots=True)
class _Worker:
    info: WorkerInfo
    url: str
    free: int = 0
    total: int = 0
    queued: int = 0
    maintenance: bool = False
    known: bool = False  # a push arrived since the peer joined or its slots socket dropped
    in_flight: int = 0  # forwards picked and not answered yet


@dataclass(slots=True)
class _Node:
    workers: dict[str, _Worker] = field(default_factory=dict)
    refused: bool = False  # a connection was refused: a dead address until its slots push again


class PeerTable:
    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def join(self, url: str, workers: list[WorkerInfo]) -> None:
        self._nodes[url] = _Node({w.id: _Worker(w, url) for w in workers})

    def leave(self, url: str) -> None:
        self._nodes.pop(url, None)

    def slots_pushed(self, url: str, worker_id: str, free: int, total: int, queued: int, maintenance: bool) -> None:
        worker = self._worker(url, worker_id)
        if worker is not None:
            worker.free, worker.total, worker.queued = free, total, queued
            worker.maintenance, worker.known = maintenance, True
            self._nodes[url].refused = False

    def slots_lost(self, url: str) -> None:
        """The peer's /ws/slots dropped: route nothing there until a push."""
        for worker in self._nodes.get(url, _Node()).workers.values():
            worker.known = False

    def refused(self, url: str) -> None:
        """Nothing listens at `url` (the peer died): not even a pinned task goes there until
        it pushes slots again or a new life of it joins."""
        node = self._nodes.get(url)
        if node is not None:
            node.refused = True
            self.slots_lost(url)

    def done(self, url: str, worker_id: str) -> None:
        """A forward picked for `worker_id` got its answer (or failed)."""
        worker = self._worker(url, worker_id)
        if worker is not None and worker.in_flight > 0:
            worker.in_flight -= 1

    def node_of(self, worker_id: str) -> str | None:
        """The address of the peer running `worker_id`, never one that refused a connection; the
        one that joined last if two claim it (a restarted peer before its old row is gone)."""
        return next((url for url, node in reversed(self._nodes.items())
                     if worker_id in node.workers and not node.refused), None)

    def claims(self, worker_id: str) -> bool:
        """Some peer in the table runs `worker_id`, reachable or not."""
        return any(worker_id in node.workers for node in self._nodes.values())

    def _worker(self, url: str, worker_id: str) -> _Worker | None:
        node = self._nodes.get(url)
        return node.workers.get(worker_id) if node else None

    def pick(self, group: str, exclude: frozenset[str] = frozenset(), above: int | None = None) -> Picked | None:
        """Only a worker with more room than `above` (this process's best) is picked."""
        best: _Worker | None = None
        best_room = 0
        for url, node in self._nodes.items():
            if url in exclude:
                continue
            for worker in node.workers.values():
                if not worker.known or worker.maintenance or group not in worker.info.groups:
                    continue
                unseen = max(0, worker.in_flight - (worker.total - worker.free + worker.queued))
                room = worker.free - worker.queued - unseen
                if room <= 0 and -room >= worker.info.max_queue:
                    continue  # no free slot and a full queue: it would answer 429
                if best is None or room > best_room:
                    best, best_room = worker, room
        if best is None or (above is not None and best_room <= above):
            return None
        best.in_flight += 1
        return Picked(best.url, best.info.id, best_room)
