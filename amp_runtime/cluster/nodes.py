"""The coordinator's node table: which connected node's worker gets the next task.

An actor. Nodes join and leave with their channel (`Join`/`Leave`); each node's `/ws/slots`
pushes arrive as `SlotsPushed`. `Pick` answers the node and worker with the most room for a
function group, never one in maintenance, with a full queue, or with no slot state yet.
Room is free slots minus queued tasks minus the forwards in flight the last push cannot have
counted yet (in flight beyond what it shows busy or queued), so a burst between two pushes
spreads out instead of piling onto one node. Forwarders say `Done` when the node answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from ..core.actor import Actor, Reply
from .wire import WorkerInfo


class Join(msgspec.Struct, tag=True):
    url: str
    workers: list[WorkerInfo]


class Leave(msgspec.Struct, tag=True):
    url: str


class SlotsPushed(msgspec.Struct, tag=True):
    url: str
    worker: str
    free: int
    total: int
    queued: int
    maintenance: bool


class SlotsLost(msgspec.Struct, tag=True):
    """The node's /ws/slots dropped or it refused a connection: route nothing there until a push."""

    url: str


class Pick(msgspec.Struct, tag=True):
    """Only a worker with more room than `above` (this process's best) is picked."""

    group: str
    exclude: frozenset[str] = frozenset()
    above: int | None = None


class Done(msgspec.Struct, tag=True):
    """A forward picked for `worker` got its answer (or failed)."""

    url: str
    worker: str


class NodeOf(msgspec.Struct, tag=True):
    worker: str


class Picked(msgspec.Struct):
    url: str
    worker: str
    room: int
    counted: bool = True  # picked by the table (so in flight until `Done`), not named by the client


@dataclass(slots=True)
class _Worker:
    info: WorkerInfo
    url: str
    free: int = 0
    total: int = 0
    queued: int = 0
    maintenance: bool = False
    known: bool = False  # a push arrived since the node joined or its slots socket dropped
    in_flight: int = 0  # forwards picked and not answered yet


@dataclass(slots=True)
class _Node:
    workers: dict[str, _Worker] = field(default_factory=dict)


class NodeTable(Actor):
    def __init__(self, *, mailbox_size: int = 1024):
        super().__init__("cluster-nodes", mailbox_size=mailbox_size)
        self._nodes: dict[str, _Node] = {}

    async def handle(self, msg, reply: Reply | None) -> None:
        answer = None
        match msg:
            case Pick():
                answer = self._pick(msg.group, msg.exclude, msg.above)
            case SlotsPushed():
                worker = self._worker(msg.url, msg.worker)
                if worker is not None:
                    worker.free, worker.total, worker.queued = msg.free, msg.total, msg.queued
                    worker.maintenance, worker.known = msg.maintenance, True
            case Done(url=url, worker=worker_id):
                worker = self._worker(url, worker_id)
                if worker is not None and worker.in_flight > 0:
                    worker.in_flight -= 1
            case Join(url=url, workers=workers):
                self._nodes[url] = _Node({w.id: _Worker(w, url) for w in workers})
            case Leave(url=url):
                self._nodes.pop(url, None)
            case SlotsLost(url=url):
                for worker in self._nodes.get(url, _Node()).workers.values():
                    worker.known = False
            case NodeOf(worker=worker_id):
                answer = next((url for url, node in self._nodes.items() if worker_id in node.workers), None)
            case _:
                raise TypeError(f"unexpected message {msg!r}")
        if reply is not None:
            reply.set(answer)

    def _worker(self, url: str, worker_id: str) -> _Worker | None:
        node = self._nodes.get(url)
        return node.workers.get(worker_id) if node else None

    def _pick(self, group: str, exclude: frozenset[str], above: int | None) -> Picked | None:
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
