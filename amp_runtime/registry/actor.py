"""The registry actor: owns every worker record; answers with the rows its changes persist.

It never waits on the store itself: a change returns the changed record's row (with a fresh
`version`), and the service persists it (writer.py) before acknowledging, so one slow commit
does not stall other workers' reports. The version guard in `store.save_workers` drops a row
that reaches the store after a newer one of the same worker.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ..core.actor import Actor, Reply
from ..core.store import Store
from . import store as sql
from .models import WorkerInfo, WorkerRecord


class Register(msgspec.Struct, tag=True):
    worker: str
    now: datetime
    timeout_s: int
    ip: str | None
    info: WorkerInfo | None = None
    queues: list[str] | None = None
    tags: list[str] | None = None
    system_tags: list[str] | None = None


class Report(msgspec.Struct, tag=True):
    worker: str
    now: datetime
    default_timeout_s: int
    ip: str | None
    task: str | None = None
    queue: str | None = None
    queues: list[str] | None = None
    tags: list[str] | None = None
    system_tags: list[str] | None = None


class Unregister(msgspec.Struct, tag=True):
    worker: str


class Expire(msgspec.Struct, tag=True):
    now: datetime


class GetOne(msgspec.Struct, tag=True):
    worker: str


class GetAll(msgspec.Struct, tag=True):
    pass


class LiveIds(msgspec.Struct, tag=True):
    now: datetime
    max_age_s: float


def is_live(rec: WorkerRecord, now: datetime, max_age_s: float | None = None) -> bool:
    """Registered and heard from within its timeout (and within `max_age_s` when given)."""
    age = (now - rec.heartbeat_at).total_seconds()
    return rec.registered and age <= rec.timeout_s and (max_age_s is None or age <= max_age_s)


class RegistryActor(Actor):
    def __init__(self, store: Store, *, mailbox_size: int = 1024, ask_timeout: float = 30.0):
        super().__init__("registry", mailbox_size=mailbox_size, ask_timeout=ask_timeout)
        self.store = store
        self.workers: dict[str, WorkerRecord] = {}
        self.version = 0

    async def on_start(self) -> None:
        records = await self.store.read(sql.load_workers)
        self.workers = {r.id: r for r in records}
        self.version = max((r.version for r in records), default=0)

    def _bump(self, rec: WorkerRecord) -> tuple:
        self.version += 1
        rec.version = self.version
        return sql.record_row(rec)

    def _ensure(self, worker: str, now: datetime, timeout_s: int, ip: str | None) -> WorkerRecord:
        """The worker's record, registered as of `now` (created on first sight)."""
        rec = self.workers.get(worker)
        if rec is None:
            rec = WorkerRecord(
                id=worker, version=0, created_at=now, registered_at=now, heartbeat_at=now,
                last_report_at=None, registered=True, timeout_s=timeout_s, info=WorkerInfo(), ip=ip,
                tags=[], system_tags=[], queues=[], task=None, queue=None,
            )
            self.workers[worker] = rec
        elif not is_live(rec, now):
            rec.registered, rec.registered_at, rec.timeout_s = True, now, timeout_s
        rec.heartbeat_at = now
        if ip is not None:
            rec.ip = ip
        return rec

    async def handle(self, msg, reply: Reply | None) -> None:
        match msg:
            case Register():
                rec = self._ensure(msg.worker, msg.now, msg.timeout_s, msg.ip)
                rec.registered, rec.registered_at, rec.timeout_s = True, msg.now, msg.timeout_s
                if msg.info is not None:
                    rec.info = msg.info
                for field in ("queues", "tags", "system_tags"):
                    if getattr(msg, field) is not None:
                        setattr(rec, field, list(getattr(msg, field)))
                answer = self._bump(rec)
            case Report():
                rec = self._ensure(msg.worker, msg.now, msg.default_timeout_s, msg.ip)
                rec.last_report_at = msg.now
                rec.task, rec.queue = msg.task, msg.queue  # absent = cleared, as the reference says
                for field in ("queues", "tags", "system_tags"):  # null = untouched
                    if getattr(msg, field) is not None:
                        setattr(rec, field, list(getattr(msg, field)))
                answer = self._bump(rec)
            case Unregister():
                rec = self.workers.get(msg.worker)
                if rec is None or not rec.registered:
                    answer = None
                else:
                    rec.registered, rec.task, rec.queue = False, None, None
                    answer = self._bump(rec)
            case Expire():
                answer = []
                for rec in self.workers.values():
                    if rec.registered and not is_live(rec, msg.now):
                        rec.registered = False
                        answer.append(self._bump(rec))
            case GetOne():
                rec = self.workers.get(msg.worker)
                answer = None if rec is None else msgspec.structs.replace(rec)
            case GetAll():
                answer = [msgspec.structs.replace(r) for r in self.workers.values()]
            case LiveIds():
                answer = [r.id for r in self.workers.values() if is_live(r, msg.now, msg.max_age_s)]
            case _:
                raise TypeError(f"registry: unexpected message {msg!r}")
        if reply is not None:
            reply.set(answer)

