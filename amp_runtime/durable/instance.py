"""One durable worker instance: an actor whose invocations run one at a time, in arrival order.

The actor has two tasks that share its state (on one trio thread, so no locks): the message
loop answers the API (invoke, keys, complete, interrupt, describe, remove) and never waits for
an invocation; the runner takes the queue head and runs it against the template object.

Durability: an invocation is persisted before it is acknowledged, and its result is recorded
together with the new state in one write. A re-run (after a restart, an interrupt or a retry)
starts from the last recorded state; the promises it creates are handed back by position, so
it finds the same promise ids, completed or not.

Interrupt: the running invocation is cancelled and rolled back; its waiting callers get 409 at
once, and it runs again once the worker is used (a retry with the same key is a use, and gets
its result). An invocation key stands for one call: reusing it for another is a 409. A raising function is retried
`max_retries` times from the recorded state, then the worker is Failed for good (new
invocations get 500; delete and re-create it). No template here makes a worker Exited.

Peers (PostgreSQL): the instance runs only while this process holds its lease. `Release` (the
service hands it over) or a write refused for a lost lease (`LeaseLost`) stops it for good: its
waiting callers get 503 and retry, reaching the new owner; nothing of it is deleted.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec
import trio

from ..core.actor import Actor, Reply
from ..core.contain import is_our_cancellation
from ..core.words import exception_name, exception_text
from . import store as sql
from .models import EXITED, FAILED, IDLE, INTERRUPTED, RETRYING, RUNNING, SUSPENDED, WorkerError
from .store import LeaseLost, PendingInvocation, RecordedCall, Snapshot
from .messages import (
    Complete, Describe, InstanceEnv, Interrupt, Invoke, NewKey, Outcome, Release, Remove, Settle, StopAccepting,
    worker_key,
)
from .templates import TemplateSpec

log = logging.getLogger("amp_runtime.durable")


@dataclass(slots=True)
class _Promise:
    invocation_seq: int
    ordinal: int
    completed: bool = False
    data: list[int] | None = None
    done: trio.Event = field(default_factory=trio.Event)


class Instance(Actor):
    def __init__(self, spec: TemplateSpec, name: str, deps: InstanceEnv, *, mailbox_size: int = 1024):
        super().__init__(f"durable:{spec.name}/{name}", mailbox_size=mailbox_size)
        self.spec = spec
        self.worker_name = name
        self.worker = worker_key(spec.template_id, name)
        self.deps = deps
        self.removed = False
        self.released = False  # handed to another peer: this actor answers no more
        self._handed_over = False
        self.ended = trio.Event()  # set by the service's supervisor once the actor has stopped for good
        self.stopped = False

    # -- the WorkerContext seen by template functions (self.ctx) ---------------------
    @property
    def args(self) -> list[str]:
        return list(self.row.args)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.row.env)

    async def create_promise(self) -> int:
        """A promise id (an oplog index). A re-run of the same invocation gets the same ids
        back in the same order. The write is shielded: once made, the id is remembered."""
        seq = self._current.seq
        ordinal = self._ordinal
        self._ordinal += 1
        for idx, promise in self.promises.items():
            if promise.invocation_seq == seq and promise.ordinal == ordinal:
                return idx
        idx = self._next_idx()
        with trio.CancelScope(shield=True):
            await self._write(sql.create_promise, idx, seq, ordinal)
        self.promises[idx] = _Promise(seq, ordinal)
        return idx

    async def await_promise(self, promise_id: int) -> bytes:
        """The completion data; the worker is Suspended until then. Cancelled by an interrupt."""
        promise = self.promises.get(promise_id)
        if promise is None:
            raise KeyError(f"unknown promise {promise_id}")
        if not promise.completed:
            self.status = SUSPENDED
            self._answer_if_settled()
            try:
                await promise.done.wait()
            finally:
                if self.status == SUSPENDED:
                    self.status = RUNNING
        return bytes(promise.data or [])

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A write of this worker's records; on peers fenced by the lease (`LeaseLost`)."""
        if self.deps.lease_owner is None:
            return await self.deps.store.write(fn, self.worker, *args)
        return await self.deps.store.write(sql.fenced, self.deps.lease_owner, self.worker, fn, *args)

    def _lose_lease(self) -> None:
        """Another peer holds the lease now: stop at once, answering everyone who waits."""
        log.warning("%s: the lease was lost to another peer; stopping here", self.name)
        self.released = True
        if self._scope is not None:
            self._scope.cancel()
        self._fail_waiters(lambda seq: True, _moved(self.worker_name))
        self.close()

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await super().run()
            nursery.cancel_scope.cancel()

    async def on_start(self) -> None:
        """Rebuild from the store (also after a crash): state, queue, keys, promises."""
        snap: Snapshot | None = await self.deps.store.read(sql.load_snapshot, self.worker)
        if snap is None:  # removed while restarting
            self.removed = True
            self.close()
            return
        self.row = snap.row
        self.status = snap.row.status  # Idle, Interrupted or Failed
        self.retry_count = snap.row.retry_count
        self.committed_state = snap.row.state
        self.obj = self.spec.new_object(self, self.committed_state)
        self.last_idx = snap.last_idx
        self.queue: deque[PendingInvocation] = deque(snap.pending)
        self.keys = dict(snap.keys)
        self.key_calls = dict(snap.key_calls)
        self.outcomes = {seq: Outcome(ok, payload) for seq, (ok, payload) in snap.outcomes.items()}
        self.promises = {
            p.idx: _Promise(p.invocation_seq, p.ordinal, p.completed, p.data) for p in snap.promises
        }
        for promise in self.promises.values():
            if promise.completed:
                promise.done.set()
        self.waiters: dict[int, list[Reply]] = {}
        self._current: PendingInvocation | None = None
        self._scope: trio.CancelScope | None = None
        self._ordinal = 0
        self._changed = trio.Event()
        self._busy = False  # the runner is inside an invocation (running, retrying or suspended)
        self._settle_waiters: list[Reply] = []
        self._nursery.start_soon(self._run_invocations)

    def _next_idx(self) -> int:
        self.last_idx += 1
        return self.last_idx

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the message loop --------------------------------------------------------------
    async def handle(self, msg: Any, reply: Reply | None) -> None:
        try:
            await self._handle(msg, reply)
        except LeaseLost:
            self._lose_lease()
            raise_to(reply, _moved(self.worker_name))

    async def _handle(self, msg: Any, reply: Reply | None) -> None:
        if self.removed or self.released:
            if reply is not None:
                reply.fail(WorkerError(404, f"worker {self.worker_name} was deleted") if self.removed
                           else _moved(self.worker_name))
            return
        match msg:
            case Invoke():
                await self._invoke(msg, reply)
            case NewKey():
                key = str(uuid.uuid4())
                await self._write(sql.add_key, key)
                self.keys[key] = None
                reply and reply.set(key)
            case Complete(idx=idx, data=data):
                await self._complete(idx, data, reply)
            case Interrupt(recover=recover):
                await self._interrupt(recover)
                reply and reply.set(True)
            case Describe():
                reply and reply.set((self.status, self.retry_count, self.row))
            case Remove():
                await self._remove()
                reply and reply.set(None)
            case Settle():
                if reply is not None:
                    self._settle_waiters.append(reply)
                    self._answer_if_settled()
            case Release():
                self.released = True
                if self._scope is not None:
                    self._scope.cancel()
                self._fail_waiters(lambda seq: True, _moved(self.worker_name))
                self.close()
                reply and reply.set(None)
            case StopAccepting(handed_over=handed_over):
                self._handed_over = handed_over
                # Only a running invocation may finish within the grace period; a caller waiting
                # for anything else (queued, suspended) would only hold the shutdown up.
                self.stopped = True
                self._fail_waiters(lambda seq: not self._is_running(seq), _shutting_down(self._handed_over))
                reply and reply.set(None)
            case _:
                raise TypeError(f"unexpected message {msg!r}")

    async def _invoke(self, msg: Invoke, reply: Reply | None) -> None:
        if msg.key is not None:
            if msg.key not in self.keys:
                raise_to(reply, WorkerError(400, f"unknown invocation key {msg.key!r}: create one with POST .../key"))
                return
            seq = self.keys[msg.key]
            call = RecordedCall.of(msg.function, msg.params, msg.convention)
            recorded = self.key_calls.get(msg.key)
            difference = recorded.mismatch(call) if recorded is not None else None
            if difference is not None:
                raise_to(reply, WorkerError(
                    409, f"invocation key {msg.key} was used for another call ({difference}); "
                    "a key stands for one call: create a new key for this one"))
                return
            if seq is not None:  # a retry: answer from the record, or wait for the same run
                if seq in self.outcomes:
                    reply and reply.set(self.outcomes[seq])
                elif self.stopped:
                    raise_to(reply, _shutting_down(self._handed_over))
                elif reply is not None:
                    self.waiters.setdefault(seq, []).append(reply)
                    await self._resume_if_interrupted()
                return
        if self.status == FAILED:
            raise_to(reply, WorkerError(500, f"worker {self.worker_name} is Failed; delete and re-create it"))
            return
        if self.stopped:
            raise_to(reply, _shutting_down(self._handed_over))
            return
        inv = PendingInvocation(self._next_idx(), msg.key, msg.function, msg.params, msg.convention)
        await self._write(sql.accept_invocation, inv)
        if msg.key is not None:
            self.keys[msg.key] = inv.seq
            self.key_calls[msg.key] = RecordedCall.of(msg.function, msg.params, msg.convention)
        self.queue.append(inv)
        if reply is not None:
            if msg.wait:
                self.waiters.setdefault(inv.seq, []).append(reply)
            else:
                reply.set(None)
        await self._resume_if_interrupted()
        self._poke()

    async def _resume_if_interrupted(self) -> None:
        """An interrupted worker resumes the first time it is used."""
        if self.status == INTERRUPTED:
            self.status = IDLE
            await self._write(sql.set_status, self._next_idx(), "resume", IDLE, self.retry_count, {})
            self._poke()

    async def _complete(self, idx: int, data: list[int], reply: Reply | None) -> None:
        promise = self.promises.get(idx)
        if promise is None:
            raise_to(reply, WorkerError(404, f"promise {idx} not found on worker {self.worker_name}"))
            return
        if promise.completed:
            reply and reply.set(False)
            return
        await self._write(sql.complete_promise, self._next_idx(), idx, data)
        promise.completed, promise.data = True, data
        promise.done.set()
        reply and reply.set(True)

    async def _interrupt(self, recover: bool) -> None:
        if self.status in (FAILED, EXITED, INTERRUPTED):
            return  # nothing runs: not an error
        if recover:  # a simulated host restart: re-run from the recorded state, status unchanged
            if self._scope is not None:
                self._scope.cancel()
            return
        self.status = INTERRUPTED
        if self._scope is not None:
            self._scope.cancel()
        await self._write(sql.set_status, self._next_idx(), "interrupt", INTERRUPTED, self.retry_count, {})
        # Nothing runs until the worker is used again: no waiter may hang until its timeout.
        self._fail_waiters(lambda seq: True, _interrupted(self.worker_name))

    async def _remove(self) -> None:
        self.removed = True
        if self._scope is not None:
            self._scope.cancel()
        await self._write(sql.delete_worker)
        self._fail_waiters(lambda seq: True, WorkerError(404, f"worker {self.worker_name} was deleted"))
        self._poke()
        self.close()

    def _is_running(self, seq: int) -> bool:
        return self.status == RUNNING and self._current is not None and self._current.seq == seq

    def _fail_waiters(self, which: Callable[[int], bool], error: WorkerError) -> None:
        for seq in [s for s in self.waiters if which(s)]:
            for reply in self.waiters.pop(seq):
                reply.fail(error)

    # -- the runner --------------------------------------------------------------------
    def _can_run(self) -> bool:
        return bool(self.queue) and self.status not in (INTERRUPTED, FAILED) and not self.removed and not self.stopped

    async def _run_invocations(self) -> None:
        """Run the queue head until the queue is empty; cancelled when the actor stops."""
        while True:
            while not self._can_run():
                if self.status in (RUNNING, RETRYING):
                    self.status = IDLE
                self._answer_if_settled()
                await self._changed.wait()
            self._busy = True
            try:
                await self._run_one(self.queue[0])
            except LeaseLost:
                self._lose_lease()
                return
            finally:
                self._busy = False

    def _answer_if_settled(self) -> None:
        if self._settle_waiters and (not self._busy or self.status == SUSPENDED):
            for reply in self._settle_waiters:
                reply.set(None)
            self._settle_waiters.clear()

    async def _run_one(self, inv: PendingInvocation) -> None:
        attempts = 0
        while True:
            self.status = RUNNING
            outcome, state, error = await self._attempt(inv)
            if outcome is None and error is None:  # interrupted: the loop decides what next
                self.obj = self.spec.new_object(self, self.committed_state)
                self.deps.count("interrupted")
                return
            if error is None:
                await self._finish(inv, outcome, state)
                return
            self.obj = self.spec.new_object(self, self.committed_state)
            attempts += 1
            if attempts > self.deps.max_retries:
                await self._fail(inv, error)
                return
            self.retry_count += 1
            self.status = RETRYING
            self.deps.count("retried")
            with trio.CancelScope(shield=True):
                await self._write(
                    sql.set_status, self._next_idx(), "retry", IDLE, self.retry_count,
                    {"invocation": inv.seq, "error": error},
                )
            with trio.CancelScope() as scope:
                self._scope = scope
                await trio.sleep(self.deps.retry_delay_s)
            self._scope = None
            if scope.cancelled_caught:
                return

    async def _attempt(self, inv: PendingInvocation) -> tuple[bytes | None, bytes | None, str | None]:
        """Run the function once: (result JSON, state JSON, None), (None, None, error) or,
        when interrupted, (None, None, None)."""
        self._current, self._ordinal = inv, 0
        result = state = error = None
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                function = self.spec.functions[inv.function]
                params = decode_params(inv)
                value = await getattr(self.obj, inv.function)(*function.convert_params(params))
                result = encode_result(value, function.returns_nothing, inv.convention)
                state = self.spec.encode_state(self.obj)
            except LeaseLost:
                raise  # a promise write found another peer holding the worker: not the function's fault
            except BaseException as exc:  # SystemExit & co. too: the invocation fails, not the server
                if is_our_cancellation(exc):
                    raise
                error = f"{exception_name(exc)}: {exception_text(exc)}"
                log.info("%s: %s raised %s", self.name, inv.function, error)
        self._scope, self._current = None, None
        if scope.cancelled_caught:
            return None, None, None
        return result, state, error

    async def _finish(self, inv: PendingInvocation, result: bytes, state: bytes) -> None:
        with trio.CancelScope(shield=True):  # recorded exactly once, whatever happens meanwhile
            await self._write(sql.finish_invocation, self._next_idx(), inv.seq, result, state)
        self.committed_state = state
        self.queue.popleft()
        outcome = Outcome(True, result)
        if inv.key is not None:
            self.outcomes[inv.seq] = outcome
        for reply in self.waiters.pop(inv.seq, []):
            reply.set(outcome)
        self.deps.count("completed")

    async def _fail(self, inv: PendingInvocation, error: str) -> None:
        """Retries exhausted: the worker is Failed; what was queued behind it fails too."""
        errors = {inv.seq: error}
        for queued in list(self.queue)[1:]:
            errors[queued.seq] = f"not run: worker {self.worker_name} failed"
        with trio.CancelScope(shield=True):
            await self._write(sql.fail_invocations, self._next_idx(), errors, self.retry_count, FAILED
            )
        self.status = FAILED
        self.queue.clear()
        for seq, text in errors.items():
            outcome = Outcome(False, text.encode())
            if seq in self.keys.values():
                self.outcomes[seq] = outcome
            for reply in self.waiters.pop(seq, []):
                reply.set(outcome)
        self.deps.count("failed")


def _interrupted(worker_name: str) -> WorkerError:
    return WorkerError(409, f"worker {worker_name} was interrupted; the invocation resumes the next time the "
                            "worker is used (retry with the same invocation key to await its result)")


def _moved(worker_name: str) -> WorkerError:
    return WorkerError(503, f"worker {worker_name} moved to another peer while this call waited; retry "
                            "(with the same invocation key: it runs once)")


def _shutting_down(handed_over: bool) -> WorkerError:
    if handed_over:
        return WorkerError(503, "this peer is shutting down and hands the worker to another peer; retry "
                                "(with the same invocation key: it runs once)")
    return WorkerError(500, "the server is shutting down; the invocation resumes at the next start "
                            "(retry with the same invocation key)")


def raise_to(reply: Reply | None, error: Exception) -> None:
    if reply is not None:
        reply.fail(error)


def decode_params(inv: PendingInvocation) -> list[Any]:
    """`component`: the params as sent. `stdio`: one string holding the JSON params (a list,
    or a single value)."""
    if inv.convention != "stdio":
        return inv.params
    value = msgspec.json.decode(inv.params[0])
    return value if isinstance(value, list) else [value]


def encode_result(value: Any, returns_nothing: bool, convention: str) -> bytes:
    """The JSON result list: `[]` for a function returning None, else `[value]`; with `stdio`,
    `[json text of the value]`."""
    if convention == "stdio":
        return msgspec.json.encode([msgspec.json.encode(value).decode()])
    return msgspec.json.encode([] if returns_nothing and value is None else [value])
