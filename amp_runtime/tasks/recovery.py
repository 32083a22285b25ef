"""At start: keep what the journal says was promised before a restart or kill -9.

Tasks accepted but not finished run again (under their id, with a fresh timeout); outcomes
not yet delivered are delivered, continuing their attempt numbers and retry budget. A task
whose function or worker group no longer exists is delivered as failed instead of dropped.
"""

from __future__ import annotations

import logging

import trio

from .journal import AcceptedTask, PendingDelivery, Recovered
from .models import TaskError, TaskResult, Webhook
from .registry import FUNCTIONS
from .webhooks import Deliver
from .worker import Rejected, Submit, Task

log = logging.getLogger("amp_runtime.tasks")
FULL_QUEUE_WAIT_S = 0.5  # a full queue is re-tried when the worker changes, at least this often


def _no_report(task_id, delivery, final) -> None:
    """A resumed delivery's task is in no worker's history; the journal has its record."""


async def resume_accepted(service, recovered: Recovered) -> None:
    if recovered.to_run or recovered.to_deliver:
        log.info("resuming %d accepted webhook tasks and %d undelivered outcomes",
                 len(recovered.to_run), len(recovered.to_deliver))
    for pending in recovered.to_deliver:
        await service.webhooks.tell(_redelivery(pending))
    for accepted in recovered.to_run:
        await _run_again(service, accepted)


def _redelivery(pending: PendingDelivery) -> Deliver:
    return Deliver(pending.task_id, pending.url, pending.headers, pending.body, _no_report,
                   first_attempt=pending.next_attempt, failures=pending.failures,
                   last_attempt_at=pending.last_attempt_at, record_outcome=False)


async def _run_again(service, accepted: AcceptedTask) -> None:
    spec = FUNCTIONS.get(accepted.function)
    if spec is None:
        await _deliver_failure(service, accepted, "FunctionNotFound",
                               f"function {accepted.function!r} is no longer registered")
        return
    webhook = Webhook(url=accepted.webhook_url, headers=accepted.webhook_headers)
    while True:
        task = Task(accepted.id, spec, accepted.input, priority=accepted.priority, mode="webhook",
                    timeout_s=accepted.timeout_s, webhook=webhook)
        task.created_at = accepted.created_at
        worker = service.workers.get(accepted.worker) if accepted.worker else None
        if worker is None:
            worker = _worker_of_group(service, spec.group)
        if worker is None:
            await _deliver_failure(service, accepted, "NoWorker", f"no worker serves group {spec.group!r}")
            return
        await worker.ask(Submit(task))
        if not (task.outcome.done and task.status == "queued"):
            return  # queued: the worker runs it and the webhook sender delivers it
        try:
            await task.outcome.wait()
        except Rejected as exc:  # a full queue or maintenance: wait, the task must still run
            log.debug("resumed task %s waits: %s", task.id, exc.message)
        with trio.move_on_after(FULL_QUEUE_WAIT_S):
            await worker.wait_changed()


def _worker_of_group(service, group: str):
    serving = [w for w in service.workers.values() if group in w.config.groups]
    if not serving:
        return None
    return max(serving, key=lambda w: w.state.free - w.state.queued)


async def _deliver_failure(service, accepted: AcceptedTask, kind: str, message: str) -> None:
    body = TaskResult(id=accepted.id, status="failed", success=False, error=TaskError(type=kind, message=message))
    await service.webhooks.tell(Deliver(accepted.id, accepted.webhook_url, accepted.webhook_headers, body,
                                        _no_report))
