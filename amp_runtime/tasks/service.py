"""The task service: admission of `POST /task`, the worker actors, the webhook sender.

`submit` is the one way a task gets in: forwarding to a node with more room, validation (every
problem listed), the webhook target check, maintenance, the stream count, the worker's queue
limits and the `Idempotency-Key` all happen there, before anything runs. Routes only decode,
submit and encode. A webhook task is journaled before its 202 (`_accept`); at start, the journal's
unfinished tasks come back in through `readmit` (see recovery.py).
"""

from __future__ import annotations

import logging
import platform
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import msgspec
import trio

from .. import build_info
from ..core.logs import LogRing
from ..core.service import ServiceBase
from . import builtin  # noqa: F401  (registers the built-in functions)
from . import idempotency
from .batch import BatchItem, BatchLine, run_batch
from .errors import Rejected, WorkerFailed
from .idempotency import IdempotencyTable, KeyEntry, Replayed
from .journal import AcceptedTask, TaskJournal
from .models import TaskAccepted, TaskRequest, Webhook, masked_view
from .outcomes import OUTCOME_STATUS, Forwarded, SyncOutcome
from .process_slots import ProcessSlots
from .recovery import readmit_when_possible, resume_accepted
from .registry import FUNCTIONS, FunctionSpec
from .streams import StreamHandle
from .validation import decode_input, task_problems
from .webhooks import Deliver, UnsafeTarget, WebhookSender, check_target
from .worker import (
    SETTLE_GRACE_S, Cancel, Hold, Lease, Lookup, RecordDelivery, SlotHold, Task, Unhold, WorkerActor,
    new_task_id, run_leased, wait_outcome,
)

# A webhook task whose worker failed under it runs again this often, then its failure is delivered:
# once keeps a task that crashes its worker from spending the supervisor's restart budget.
MAX_READMITS = 1
RUN_JOURNAL_S = 5.0  # how long a webhook task's run waits to be journaled before it runs unrecorded
log = logging.getLogger("amp_runtime.tasks")


class WorkerSnapshot(msgspec.Struct):
    """One worker's capacity as the registry, /health and /ws/slots see it."""

    worker: str
    total: int
    free: int
    queued: int
    maintenance: bool
    running: list[str] = []  # ids of running tasks (and jobs holding a slot, as "job:<id>")


# -- what `submit` answers ---------------------------------------------------------------------

Submitted = SyncOutcome | StreamHandle | TaskAccepted | Forwarded | Replayed
_encode = msgspec.json.Encoder().encode


RouteTask = Callable[[TaskRequest, FunctionSpec], Awaitable[Any]]


async def _run_here(request: TaskRequest, spec: FunctionSpec) -> None:
    return None


@dataclass(frozen=True)
class ProcessInfo:
    """What /health and /logs tell of the process: its version, uptime and recent log lines."""

    version: str = field(default_factory=build_info.package_version)
    uptime_s: Callable[[], float] = lambda: 0.0
    logs: LogRing = field(default_factory=LogRing)
    build: Callable[[], build_info.BuildInfo] = build_info.current  # cached: the registry asked at start


class TaskService(ServiceBase):
    def __init__(self, config, store, *, process: ProcessInfo | None = None):
        super().__init__(config, store)
        self.process = process or ProcessInfo()
        tasks = self.config.tasks
        # A cluster may answer a task on a node with more room; the wiring sets it once the
        # cluster service exists (it is built after this one, since it reads our workers).
        self.route_task: RouteTask = _run_here
        self.journal = TaskJournal(self.store)  # accepted webhook tasks survive restarts
        self.idempotency = IdempotencyTable(keep_s=tasks.keep_results_s, max_entries=tasks.keep_results)
        self.webhooks = WebhookSender(self.config.webhook, self.journal)
        self.workers: dict[str, WorkerActor] = {
            w.id: WorkerActor(
                w, keep_results=tasks.keep_results, keep_results_s=tasks.keep_results_s,
                expose_tracebacks=tasks.expose_tracebacks, on_finished=self._send_webhook,
                before_run=self._journal_run,
                mailbox_size=self.config.actors.mailbox_size,
            )
            for w in self.config.workers
        }
        self._serving: dict[str, list[WorkerActor]] = {}  # group -> its workers (the configured ones: fixed)
        for worker in self.workers.values():
            for group in worker.config.groups:
                self._serving.setdefault(group, []).append(worker)
        self.process_slots = ProcessSlots(tasks.process_pool_size)  # run="process" functions
        self.open_streams = 0  # changed only by `submit` and `StreamHandle.close`, neither awaits
        self._readmits: dict[str, int] = {}  # task id -> times its worker failed under it
        self._nursery: trio.Nursery | None = None  # where webhook tasks wait to run again
        self.tags: dict[str, str] = {
            "python": platform.python_version(),
            "amp_runtime": build_info.package_version(),
            "trio": trio.__version__,
            "platform": sys.platform,
        }
        for tag in tasks.tags:
            name, _, value = tag.partition("=")
            self.tags[name] = value or "true"

    def actors(self) -> list:
        return [self.process_slots, self.webhooks, *self.workers.values()]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Before HTTP opens: the journaled keys are known; then what was promised is resumed.
        recovered = await self.journal.recover(keep_s=self.config.tasks.keep_results_s)
        self.idempotency.load(recovered.keys)
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            self._nursery = nursery
            nursery.start_soon(resume_accepted, self, recovered)
            task_status.started()

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn()` for as long as the service runs (the hot path's disconnect watch).
        Raises RuntimeError when the service is not running."""
        if self._nursery is None:
            raise RuntimeError("the task service is not running")
        self._nursery.start_soon(fn)

    @property
    def maintenance(self) -> bool:
        """True while every worker is in maintenance: the workers hold the one flag."""
        return all(worker.maintenance for worker in self.workers.values())

    # -- admission -------------------------------------------------------------------------
    async def submit(self, request: TaskRequest, key: str | None = None) -> Submitted:
        """Admit one `POST /task` (or batch item) and start it: a sync task's outcome, a stream to
        read, a webhook task's acceptance, a node's answer, or (a duplicate `key`, already checked:
        `idempotency.parse_key`, `check_key`) the first request's answer. Raises `Rejected`
        (4xx/5xx with a code, every problem of a 400 listed) and `WorkerFailed`."""
        spec = FUNCTIONS.get(request.function)
        if spec is None:
            raise Rejected(404, "FUNCTION_NOT_FOUND", f"no function {request.function[:256]!r}")
        if key is None:  # keys live in this process, so a keyed request runs here
            forwarded = await self.route_task(request, spec)  # a node with more room answers
            if forwarded is not None:
                return Forwarded(forwarded)
        task_input = await self._check(request, spec)
        worker = self.pick_worker(spec, request.worker)
        task = self.new_task(request, spec, task_input)
        if key is None:
            return await self._start(worker, task, request, None)
        # The first request with the key starts its task; a duplicate gets that task's answer.
        return await idempotency.submit_once(self.idempotency, key, request,
                                             lambda entry: self._start(worker, task, request, entry))

    async def _start(self, worker: WorkerActor, task: Task, request: TaskRequest,
                     keyed: KeyEntry | None) -> Submitted:
        if keyed is not None:  # duplicates attach to this task; DELETE /task finds it
            self.idempotency.bind(keyed, task)
        if request.mode == "sync":
            return await self._run_sync(worker, task)
        if request.mode == "stream":
            return self._start_stream(worker, task)
        return await self._accept(worker, task, request, keyed)

    def submit_batch(self, items: list[BatchItem], *, may_forward: bool = True) -> AsyncIterator[list[BatchLine]]:
        """Admit the items of a `POST /tasks`; lists of lines as items finish. Closing the iterator
        cancels the unfinished items (see `batch.run_batch`). `may_forward=False` (the caller knows
        no node forwards) admits the sync items all at once through `admit_sync`."""
        return run_batch(self, items, may_forward=may_forward)

    def admit_sync(self, request: TaskRequest, task_id: str) -> tuple[WorkerActor, Task, Lease | None]:
        """`submit`'s checks for a sync request that is not forwarded, without awaiting: the task
        admitted under `task_id`, and a lease when its worker lent a free slot (else it is queued
        and its outcome comes on `task.outcome`). Raises `Rejected` and `WorkerFailed`."""
        spec, task_input, worker = self._admission(request)
        task = self.new_task(request, spec, task_input, task_id)
        return worker, task, worker.admit(task, lease=True)

    def _admission(self, request: TaskRequest) -> tuple[FunctionSpec, Any, WorkerActor]:
        """A request's function, its decoded input and the worker to run it; raises `Rejected`."""
        spec = FUNCTIONS.get(request.function)
        if spec is None:
            raise Rejected(404, "FUNCTION_NOT_FOUND", f"no function {request.function[:256]!r}")
        return spec, self._valid_input(request, spec), self.pick_worker(spec, request.worker)

    async def submit_sync(self, request: TaskRequest, client: Any = None) -> SyncOutcome:
        """`submit` for a sync request without an idempotency key when no peer forwards (the
        hot path's case): the same checks and outcome, without the other modes' steps and their
        coroutines (a cold coroutine per step was ~5% of a sync request). `client.follow(worker,
        task)` is told the admitted task if it may wait, to cancel it if the client leaves
        (hotpath.Client); a function without an await point on a free slot answers at once
        (`WorkerActor.run_now`). Raises `Rejected` and `WorkerFailed`."""
        spec, task_input, worker = self._admission(request)
        task_id = new_task_id()
        if not spec.suspends:
            webhook_url = request.webhook.url if request.webhook is not None else None  # kept, as for any sync task
            result = worker.run_now(spec, task_input, task_id, request.priority, webhook_url)
            if result is not None:
                return SyncOutcome(OUTCOME_STATUS[result.status], result)
        task = self.new_task(request, spec, task_input, task_id)
        lease = worker.admit(task, lease=True)
        if client is not None:
            client.follow(worker, task)
        result = await run_leased(worker, lease, task) if lease is not None else await wait_outcome(worker, task)
        return SyncOutcome(OUTCOME_STATUS[result.status], result)

    async def _run_sync(self, worker: WorkerActor, task: Task) -> SyncOutcome:
        """On a slot the worker lends when one is free (no hop), else through its queue."""
        lease = worker.admit(task, lease=True)
        if lease is not None:
            result = await run_leased(worker, lease, task)
        else:
            result = await wait_outcome(worker, task)
        return SyncOutcome(OUTCOME_STATUS[result.status], result)

    def _start_stream(self, worker: WorkerActor, task: Task) -> StreamHandle:
        """The stream's place is taken here and given back by `StreamHandle.close`."""
        self._take_stream()
        try:
            worker.admit(task)
        except BaseException:
            self._stream_closed()
            raise
        return StreamHandle(self, task)

    async def _accept(self, worker: WorkerActor, task: Task, request: TaskRequest,
                      keyed: KeyEntry | None) -> TaskAccepted:
        """A webhook task: journaled, queued, answered 202; its outcome delivered when it settles."""
        accepted = AcceptedTask(
            id=task.id, function=task.spec.name, input=request.input, priority=request.priority,
            webhook_url=request.webhook.url, webhook_headers=dict(request.webhook.headers),
            timeout_s=self._timeout_s(task.spec), worker=request.worker, group=task.spec.group,
            created_at=task.created_at,
            idempotency_key=keyed.key if keyed is not None else None,
            request_fingerprint=keyed.fingerprint if keyed is not None else None,
            placed_on=worker.name,
        )
        # Shielded: a client leaving once the row is durable must not leave a task that would run
        # only after a restart. Bounded: a store away answers at once (the append is withdrawn or
        # its transaction's outcome is known).
        with trio.CancelScope(shield=True):
            try:
                await self.journal.accept(accepted)
            except Exception as exc:
                raise Rejected(503, "STORE_UNAVAILABLE", f"the task could not be persisted: {exc}") from None
            try:
                worker.admit(task)
            except BaseException:  # refused: the client gets no 202, so the journal forgets it
                await self.journal.forget(task.id)
                raise
        return TaskAccepted(id=task.id)

    def readmit(self, accepted: AcceptedTask) -> None:
        """Recovery's way in: a journaled webhook task runs again under its id. Its request was
        validated and counted when it was first accepted, so only the worker's own `admit` (queue
        limit, maintenance) stands in the way. Never awaits. Raises `Rejected` / `WorkerFailed`
        (the worker cannot take it now: try again later) and `LookupError` (its function or
        every worker of its group is gone: it can never run here)."""
        spec = FUNCTIONS.get(accepted.function)
        if spec is None:
            raise LookupError(f"function {accepted.function!r} is no longer registered")
        task_input, problems = decode_input(spec, accepted.input)
        if problems:
            raise LookupError(f"the input no longer fits {spec.name!r}: " + "; ".join(problems))
        worker = self.workers.get(accepted.worker) if accepted.worker else None
        if worker is None:
            serving = [w for w in self.workers.values() if spec.group in w.config.groups]
            if not serving:
                raise LookupError(f"no worker serves group {spec.group!r}")
            worker = max(serving, key=lambda w: (not w.maintenance, w.state.free - w.state.queued))
        task = Task(accepted.id, spec, task_input, priority=accepted.priority, mode="webhook",
                    timeout_s=accepted.timeout_s,
                    webhook=Webhook(url=accepted.webhook_url, headers=accepted.webhook_headers))
        task.created_at = accepted.created_at
        worker.admit(task)

    def _timeout_s(self, spec: FunctionSpec) -> float:
        return spec.timeout_s if spec.timeout_s is not None else self.config.tasks.default_timeout_s

    async def _check(self, request: TaskRequest, spec: FunctionSpec) -> Any:
        """The function's input, decoded; raises `Rejected` (400) listing every problem."""
        task_input = self._valid_input(request, spec)
        if request.mode == "webhook":
            try:
                await check_target(request.webhook.url, self.config.webhook.allow_private)
            except UnsafeTarget as exc:
                raise Rejected(400, "WEBHOOK_TARGET_REFUSED", str(exc)) from None
        return task_input

    def _valid_input(self, request: TaskRequest, spec: FunctionSpec) -> Any:
        """The function's input, decoded; raises `Rejected` (400) listing every problem but the
        webhook target's (`_check` looks that one up)."""
        problems = task_problems(request, spec, self.workers, self.config.http.max_id_length)
        task_input, input_problems = decode_input(spec, request.input)
        problems += input_problems
        if problems:
            raise Rejected(400, "VALIDATION_ERROR", "; ".join(problems), problems=problems)
        return task_input

    def _take_stream(self) -> None:
        if self.open_streams >= self.config.http.max_open_streams:
            raise Rejected(429, "TOO_MANY_STREAMS", "too many open streams", retry_after=1)
        self.open_streams += 1

    def _stream_closed(self) -> None:
        self.open_streams -= 1

    def worker_ids(self) -> list[str]:
        return list(self.workers)

    def pick_worker(self, spec: FunctionSpec, named: str | None) -> WorkerActor:
        """The named worker, or the one serving the function's group with most free capacity."""
        if named is not None:
            return self.workers[named]
        serving = self._serving.get(spec.group, ())
        if len(serving) == 1:  # nothing to compare
            best = serving[0] if not serving[0].maintenance else None
        else:
            best, best_room = None, None
            for worker in serving:
                if worker.maintenance:
                    continue
                room = worker.room  # not `state`: that builds a snapshot, per task
                if best_room is None or room > best_room:
                    best, best_room = worker, room
        if best is None:
            if serving:
                raise Rejected(503, "MAINTENANCE", f"every worker of group {spec.group!r} is in maintenance")
            raise Rejected(404, "NO_WORKER", f"no worker serves group {spec.group!r}")
        return best

    def new_task(self, request: TaskRequest, spec: FunctionSpec, task_input: Any, task_id: str | None = None) -> Task:
        return Task(task_id or new_task_id(), spec, task_input, priority=request.priority,
                    mode=request.mode, timeout_s=self._timeout_s(spec), webhook=request.webhook)

    # -- after admission -------------------------------------------------------------------
    def cancel_nowait(self, task: Task) -> None:
        self.workers[task.worker].tell_nowait(Cancel(task.id))

    async def cancel(self, task_id: str) -> Any:
        """The cancelled task's outcome (await it for the final state), or None."""
        for worker in self.workers.values():
            outcome = await worker.ask(Cancel(task_id))
            if outcome is not None:
                return outcome
        return None

    def task_id_for_key(self, idempotency_key: str | None) -> str:
        """The id of the task admitted under the `Idempotency-Key` header's key (DELETE /task).
        Raises `Rejected` 400 without a (valid) key, 404 for a key this process does not know."""
        key = idempotency.parse_key(idempotency_key)
        if key is None:
            raise Rejected(400, "INVALID_IDEMPOTENCY_KEY", f"DELETE /task needs an {idempotency.HEADER} header")
        task_id = self.idempotency.task_id_of(key)
        if task_id is None:
            raise Rejected(404, "TASK_NOT_FOUND", f"no task submitted with {idempotency.HEADER} {key[:64]!r}")
        return task_id

    async def lookup(self, task_id: str) -> Any:
        """The task's `TaskView` as answered (`masked_view`), or None."""
        for worker in self.workers.values():
            if (view := await worker.ask(Lookup(task_id))) is not None:
                return masked_view(view)
        return masked_view(await self.journal.get(task_id))  # webhook tasks across restarts

    async def _journal_run(self, task: Task) -> None:
        """A webhook task's run is durable before its function is called: were it to end the
        process, recovery counts it (`[tasks] crash_retries`). A store that cannot take it within
        RUN_JOURNAL_S costs that bound, not the run."""
        with trio.move_on_after(RUN_JOURNAL_S) as scope:
            try:
                await self.journal.begin_run(task.id)
            except Exception as exc:
                log.warning("task %s: its run could not be journaled (%s); it runs all the same", task.id, exc)
        if scope.cancelled_caught:
            log.warning("task %s: its run was not journaled within %.0fs; it runs all the same", task.id, RUN_JOURNAL_S)

    def _send_webhook(self, task: Task) -> None:
        if task.error is not None and task.error.type == "WorkerFailed" and self._run_again_later(task):
            return
        self._readmits.pop(task.id, None)
        worker = self.workers[task.worker]

        def report(task_id: str, delivery: Any, final: str | None) -> None:
            worker.tell_nowait(RecordDelivery(task_id, delivery, final))

        self.webhooks.enqueue(Deliver(task.id, task.webhook.url, dict(task.webhook.headers),
                                      task.result_body(), report, worker=task.worker, started_at=task.started_at))

    def _run_again_later(self, task: Task) -> bool:
        """A webhook task its worker failed (or stopped) under is journaled but not finished: it
        runs again once the worker is back (at most `MAX_READMITS` times, then its failure is
        delivered), or, if the process is stopping, at the next start. Never awaits."""
        count = self._readmits.get(task.id, 0)
        if count >= MAX_READMITS or self._nursery is None:
            return False
        self._readmits[task.id] = count + 1
        accepted = AcceptedTask(
            id=task.id, function=task.spec.name, input=msgspec.to_builtins(task.input),
            priority=task.priority, webhook_url=task.webhook.url, webhook_headers=dict(task.webhook.headers),
            timeout_s=self._timeout_s(task.spec), worker=task.worker, group=task.spec.group,
            created_at=task.created_at,
        )
        try:
            self._nursery.start_soon(readmit_when_possible, self, accepted)
        except RuntimeError:  # the service is stopping: the journal keeps it for the next start
            pass
        log.warning("task %s: %s; it runs again", task.id, task.error.message, extra={"task_id": task.id})
        return True

    # -- maintenance and capacity --------------------------------------------------------
    async def set_maintenance(self, on: bool) -> None:
        for worker in self.workers.values():
            worker.set_maintenance(on)

    async def snapshot(self) -> list[WorkerSnapshot]:
        return [
            WorkerSnapshot(w.name, w.state.total, w.state.free, w.state.queued, w.state.maintenance,
                           w.running_ids())
            for w in self.workers.values()
        ]

    @asynccontextmanager
    async def hold_slot(self, worker_id: str, holder: str) -> AsyncIterator[None]:
        """Occupy one slot of `worker_id` for the body (a running job). Waits for a free slot
        ahead of queued tasks; raises KeyError for an unknown worker and `WorkerFailed` when
        the worker fails (the body is cancelled then)."""
        worker = self.workers[worker_id]
        hold = SlotHold(holder)
        await worker.ask(Hold(hold))
        try:
            await hold.granted.wait()
            if hold.failure is None:
                with hold.scope:
                    yield
            if hold.failure is not None:
                raise hold.failure
        finally:
            if not worker.tell_nowait(Unhold(hold)):
                with trio.CancelScope(shield=True), trio.move_on_after(SETTLE_GRACE_S):
                    await worker.tell(Unhold(hold))

    def stop_accepting(self) -> None:
        for worker in self.workers.values():
            worker.set_maintenance(True)

    async def drain(self) -> None:
        for worker in self.workers.values():
            await worker.wait_idle()
        await self.webhooks.wait_idle()


__all__ = ["TaskService", "Submitted", "SyncOutcome", "StreamHandle", "Forwarded", "Rejected", "WorkerFailed"]
