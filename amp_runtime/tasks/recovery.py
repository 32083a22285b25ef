"""At start: keep what the journal says was promised before a restart or kill -9.

Tasks accepted but not finished run again (under their id, with a fresh timeout), unless the
process ended in more than `[tasks] crash_retries` of their runs: then their failure is delivered
(`ProcessEnded`), so no task can keep a data dir from serving. Outcomes
not yet delivered are delivered, continuing their attempt numbers and retry budget. A task
whose function or worker group no longer exists is delivered as failed instead of dropped.
The same way in serves a webhook task whose worker failed under it (`readmit_when_possible`).
"""

from __future__ import annotations

import logging

import trio

from .errors import Rejected, WorkerFailed
from .journal import AcceptedTask, PendingDelivery, Recovered
from .models import TaskError, TaskResult
from .webhooks import Deliver

log = logging.getLogger("amp_runtime.tasks")
RETRY_WAIT_S = 0.5  # a worker that cannot take a task now (queue full, restarting) is asked again


def _no_report(task_id, delivery, final) -> None:
    """A resumed delivery's task is in no worker's history; the journal has its record."""


async def resume_accepted(service, recovered: Recovered) -> None:
    if recovered.to_run or recovered.to_deliver:
        log.info("resuming %d accepted webhook tasks and %d undelivered outcomes",
                 len(recovered.to_run), len(recovered.to_deliver))
    for pending in recovered.to_deliver:
        service.webhooks.enqueue(_redelivery(pending))
    crash_retries = service.config.tasks.crash_retries
    for accepted in recovered.to_run:  # in acceptance order, each before the next
        if accepted.runs > crash_retries:
            _deliver_failure(service, accepted, "ProcessEnded",
                             f"the process ended while the task ran, {accepted.runs} times; it is not run again"
                             f" ([tasks] crash_retries = {crash_retries})")
            continue
        await readmit_when_possible(service, accepted)


def _redelivery(pending: PendingDelivery) -> Deliver:
    return Deliver(pending.task_id, pending.url, pending.headers, pending.body, _no_report,
                   first_attempt=pending.next_attempt, failures=pending.failures,
                   last_attempt_at=pending.last_attempt_at, record_outcome=False)


async def readmit_when_possible(service, accepted: AcceptedTask) -> None:
    """Through `TaskService.readmit`, asking again while the worker cannot take it yet."""
    while True:
        try:
            service.readmit(accepted)
            return  # queued: the worker runs it and the webhook sender delivers it
        except LookupError as exc:
            _deliver_failure(service, accepted, "NotRunnable", str(exc))
            return
        except Rejected as exc:
            if exc.code == "DUPLICATE_TASK_ID":  # already queued or running again
                return
            # full or in maintenance
            log.debug("task %s waits to run again: %s", accepted.id, exc, extra={"task_id": accepted.id})
        except WorkerFailed as exc:  # restarting: it must still run
            log.debug("task %s waits to run again: %s", accepted.id, exc, extra={"task_id": accepted.id})
        await trio.sleep(RETRY_WAIT_S)


def _deliver_failure(service, accepted: AcceptedTask, kind: str, message: str) -> None:
    log.warning("task %s cannot run again: %s", accepted.id, message, extra={"task_id": accepted.id})
    body = TaskResult(id=accepted.id, status="failed", success=False, error=TaskError(type=kind, message=message))
    service.webhooks.enqueue(Deliver(accepted.id, accepted.webhook_url, accepted.webhook_headers, body,
                                     _no_report))
