"""The registry actor: owns every worker record; a change is shown only once it is persisted.

This is the one-process registry (DuckDB, records.LocalRecords). On a PostgreSQL store shared by
peers no process's memory holds the truth: the table does (shared.py). The messages below are
used there too, as the changes the database merges.

It never waits on the store itself: a change message returns a *proposed* record (a new
object, with a fresh `version`) and keeps it aside; the service persists it through the writer
(writer.py), and the writer reports the outcome back as `Settled`. Only then does the record
become what reads see; a failed write drops the proposal. So one slow commit does not stall
other workers' reports, and a store failure never leaves a change listed that was not saved.
A change of a worker with a proposal in flight builds on that proposal (the writer commits
batches in order). The version guard in `store.save_workers` drops a row that reaches the
store after a newer one of the same worker, from this process or a peer.
"""

from __future__ import annotations

import time
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


class Settled(msgspec.Struct, tag=True):
    """From the writer: these proposed records were committed (`ok`) or not."""

    records: list[WorkerRecord]
    ok: bool


def is_live(rec: WorkerRecord, now: datetime, max_age_s: float | None = None) -> bool:
    """Registered and heard from within its timeout (and within `max_age_s` when given)."""
    age = (now - rec.heartbeat_at).total_seconds()
    return rec.registered and age <= rec.timeout_s and (max_age_s is None or age <= max_age_s)


class RegistryActor(Actor):
    def __init__(self, store: Store, *, mailbox_size: int = 1024, ask_timeout: float = 30.0):
        super().__init__("registry", mailbox_size=mailbox_size, ask_timeout=ask_timeout)
        self.store = store
        self.workers: dict[str, WorkerRecord] = {}  # persisted: what reads see
        self.proposed: dict[str, WorkerRecord] = {}  # the latest change of a worker, not yet settled
        self.version = 0

    async def on_start(self) -> None:
        records = await self.store.read(sql.load_workers)
        self.workers = {r.id: r for r in records}
        self.proposed = {}
        self.version = max((r.version for r in records), default=0)

    def _latest(self, worker: str) -> WorkerRecord | None:
        return self.proposed.get(worker) or self.workers.get(worker)

    def _propose(self, rec: WorkerRecord) -> WorkerRecord:
        # Microseconds of wall time, kept increasing: a later change made by another peer on the
        # same store outranks an earlier one of ours (a bare per-process counter would not).
        self.version = max(self.version + 1, time.time_ns() // 1000)
        rec.version = self.version
        self.proposed[rec.id] = rec
        return rec

    def _ensure(self, worker: str, now: datetime, timeout_s: int, ip: str | None) -> WorkerRecord:
        """A new copy of the worker's latest record, registered as of `now` (created on first sight)."""
        latest = self._latest(worker)
        if latest is None:
            rec = WorkerRecord(
                id=worker, version=0, created_at=now, registered_at=now, heartbeat_at=now,
                last_report_at=None, registered=True, timeout_s=timeout_s, info=WorkerInfo(), ip=ip,
                tags=[], system_tags=[], queues=[], task=None, queue=None,
            )
        else:
            rec = msgspec.structs.replace(latest)
            if not is_live(rec, now):
                rec.registered, rec.registered_at, rec.timeout_s = True, now, timeout_s
        rec.heartbeat_at = now
        if ip is not None:
            rec.ip = ip
        return rec

    def _settle(self, records: list[WorkerRecord], ok: bool) -> None:
        for rec in records:
            if ok:
                current = self.workers.get(rec.id)
                if current is None or current.version < rec.version:
                    self.workers[rec.id] = rec
            pending = self.proposed.get(rec.id)
            if pending is not None and pending.version <= rec.version:
                del self.proposed[rec.id]

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
                answer = self._propose(rec)
            case Report():
                rec = self._ensure(msg.worker, msg.now, msg.default_timeout_s, msg.ip)
                rec.last_report_at = msg.now
                rec.task, rec.queue = msg.task, msg.queue  # absent = cleared, as the reference says
                for field in ("queues", "tags", "system_tags"):  # null = untouched
                    if getattr(msg, field) is not None:
                        setattr(rec, field, list(getattr(msg, field)))
                answer = self._propose(rec)
            case Unregister():
                latest = self._latest(msg.worker)
                if latest is None or not latest.registered:
                    answer = None
                else:
                    rec = msgspec.structs.replace(latest, registered=False, task=None, queue=None)
                    answer = self._propose(rec)
            case Expire():
                answer = []
                for rec in self.workers.values():
                    # A worker with a change in flight was just heard from: the next round looks again.
                    if rec.id not in self.proposed and rec.registered and not is_live(rec, msg.now):
                        answer.append(self._propose(msgspec.structs.replace(rec, registered=False)))
            case Settled():
                self._settle(msg.records, msg.ok)
                answer = None
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
