"""The task journal: accepted webhook tasks and their deliveries, persisted through the store.

A 202 promises that the task will run and its outcome will be delivered, so the promise is
written down before the 202 leaves (`accept`) and kept until delivery settles:

- `accept(task)`           durable before it returns; concurrent accepts share one commit
                           (the store's group commit gathers them into one `INSERT ... unnest`);
- `begin_run(task_id)`     durable before the function is called: the runs a process did not
                           survive are counted at the next start (`AcceptedTask.runs`);
- `finish(...)`            the outcome, durable before the first delivery attempt (it also
                           reserves attempt number 1, saving a commit per task); `finish_soon`
                           queues it at once, ahead of the next task's `begin_run`;
- `begin_attempt(...)`     written before each later POST, so attempt numbers are never reused;
- `record_attempt(...)`    the answer (or error) of an attempt, and the final status on the last;
- `forget_headers(...)`    once settled: the request's webhook headers are not kept at rest;
- `recover(...)`           at start: what must run again, what must still be delivered, the keys;
- `get(task_id)`           a task's view for `GET /tasks/{id}` across restarts.

Each write is awaited before the next one of the same task is issued, so their order in the
store is the order they happened. Sync and stream tasks never come here.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import msgspec

from ..core.clock import rfc3339
from ..core.store import Store
from .models import Delivery, TaskError, TaskResult, TaskView

_encode = msgspec.json.Encoder().encode
_decode_error = msgspec.json.Decoder(TaskError).decode
_decode_headers = msgspec.json.Decoder(dict[str, str]).decode
FINISHED = ("completed", "failed", "timed_out", "cancelled")


class AcceptedTask(msgspec.Struct, kw_only=True):
    """Everything needed to run a webhook task again after a restart."""

    id: str
    function: str
    input: Any = None
    priority: int | None = None
    webhook_url: str
    webhook_headers: dict[str, str] = {}
    timeout_s: float
    worker: str | None = None  # as named in the request
    group: str
    created_at: float  # epoch seconds
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    placed_on: str | None = None  # the worker admission picked (what GET /tasks/{id} names)
    runs: int = 0  # runs begun without an outcome: each ended with its process


class PendingDelivery(msgspec.Struct, kw_only=True):
    """A finished task whose outcome is not yet delivered (nor given up on)."""

    task_id: str
    url: str
    headers: dict[str, str]
    body: TaskResult
    next_attempt: int  # attempt numbers already used are never sent again
    failures: int  # attempts that got an answer or an error (the retry budget counts these)
    last_attempt_at: float | None = None


class JournaledKey(msgspec.Struct, kw_only=True):
    key: str
    fingerprint: str
    task_id: str


class Recovered(msgspec.Struct, kw_only=True):
    to_run: list[AcceptedTask]
    to_deliver: list[PendingDelivery]
    keys: list[JournaledKey]
    pruned: int = 0


_TASK_COLUMNS = (
    "id", "function", "input", "priority", "webhook_url", "webhook_headers", "timeout_s", "worker",
    "fn_group", "created_at", "idempotency_key", "request_fingerprint", "placed_on",
)
_OUTCOME_COLUMNS = ("task_id", "status", "result", "error", "duration_ms", "finished_at", "worker", "started_at")
_RUN_COLUMNS = ("task_id", "started_at")
_DELIVERY_COLUMNS = ("task_id", "attempt", "attempted_at", "answered", "status_code", "error", "final_status")


class TaskJournal:
    """The persistence of accepted webhook tasks; every call goes through the store actor.

    Every hot-path write is a store `append`: the rows of all callers waiting on one group commit
    become one `INSERT ... SELECT unnest(...)` per table."""

    def __init__(self, store: Store):
        self.store = store

    async def accept(self, task: AcceptedTask) -> None:
        """Returns once the task is durable (raises if its commit failed)."""
        row = (
            task.id, task.function, _encode(task.input).decode(), task.priority, task.webhook_url,
            _encode(task.webhook_headers).decode(), task.timeout_s, task.worker, task.group,
            task.created_at, task.idempotency_key, task.request_fingerprint, task.placed_on,
        )
        await self.store.append("webhook_tasks", _TASK_COLUMNS, row)

    async def begin_run(self, task_id: str) -> None:
        """Returns once the run is durable: were the function to end the process, the next start
        knows it ran (concurrent ones share a group commit)."""
        await self.store.append("webhook_runs", _RUN_COLUMNS, (task_id, time.time()))

    async def forget(self, task_id: str) -> None:
        """Drop a task accepted here but refused by its worker (the client got no 202)."""
        await self.store.write(_forget, task_id)

    async def finish(self, body: TaskResult, finished_at: float | None = None, *, worker: str | None = None,
                     started_at: float | None = None) -> None:
        """Record the outcome, the worker it ran on and when it started (durable on return).
        Only a task's first outcome counts."""
        await self.finish_soon(body, finished_at, worker=worker, started_at=started_at)()

    def finish_soon(self, body: TaskResult, finished_at: float | None = None, *, worker: str | None = None,
                    started_at: float | None = None) -> Callable[[], Awaitable[None]]:
        """`finish`, queued now, before any write asked for later (the next task's `begin_run`):
        a task that ends the process cannot take the outcome of the one before it along, so that
        one never runs again. Await what it returns for the commit."""
        result = None if body.result is None or body.result is msgspec.UNSET else _encode(body.result).decode()
        error = None if body.error is None else _encode(body.error).decode()
        row = (body.id, body.status, result, error, body.duration_ms,
               finished_at if finished_at is not None else time.time(), worker, started_at)
        return self.store.append_soon("webhook_outcomes", _OUTCOME_COLUMNS, row)

    async def begin_attempt(self, task_id: str, attempt: int, at: float) -> None:
        """Written before the POST goes out, so a restart never reuses the number."""
        await self.store.append("webhook_deliveries", _DELIVERY_COLUMNS,
                                (task_id, attempt, at, False, None, None, None))

    async def record_attempt(self, task_id: str, attempt: int, *, status_code: int | None,
                             error: str | None, final_status: str | None, at: float | None = None) -> None:
        """The attempt's answer; `final_status` (delivered, failed) settles the task's delivery."""
        await self.store.append("webhook_deliveries", _DELIVERY_COLUMNS, (
            task_id, attempt, time.time() if at is None else at, True, status_code, error, final_status))

    async def forget_headers(self, task_id: str) -> None:
        """Once its delivery settled, a task's webhook headers (credentials, often) are dropped."""
        await self.store.write(_forget_headers, task_id)

    async def recover(self, *, keep_s: float, now: float | None = None) -> Recovered:
        """Prune settled tasks older than `keep_s`, then read what a restart must resume."""
        return await self.store.write(_recover, keep_s, time.time() if now is None else now)

    async def get(self, task_id: str) -> TaskView | None:
        return await self.store.read(_get, task_id)


# -- SQL: plain functions of the connection, run on the store's thread ---------------------------
_TABLES = ("webhook_deliveries", "webhook_outcomes", "webhook_runs")


def _forget(conn, task_id: str) -> None:
    for table in _TABLES:
        conn.execute(f"DELETE FROM {table} WHERE task_id = ?", [task_id])
    conn.execute("DELETE FROM webhook_tasks WHERE id = ?", [task_id])


_NO_HEADERS = "'{}'"
_SETTLED = "SELECT task_id FROM webhook_deliveries WHERE final_status IS NOT NULL"


def _forget_headers(conn, task_id: str) -> None:
    conn.execute(f"UPDATE webhook_tasks SET webhook_headers = {_NO_HEADERS} WHERE id = ?", [task_id])


# The first outcome of each task, and each task's delivery state folded from its attempt rows.
_OUTCOMES = "(SELECT DISTINCT ON (task_id) * FROM webhook_outcomes ORDER BY task_id, seq)"
_DELIVERY_STATE = (
    "(SELECT task_id, max(final_status) AS final_status, max(attempt) AS last_attempt,"
    " count(*) FILTER (WHERE answered) AS answered, max(attempted_at) AS last_at"
    " FROM webhook_deliveries GROUP BY task_id)"
)
_TASK_FIELDS = ("t.id, t.function, t.input, t.priority, t.webhook_url, t.webhook_headers, t.timeout_s,"
                " t.worker, t.fn_group, t.created_at, t.idempotency_key, t.request_fingerprint,"
                " (SELECT count(*) FROM webhook_runs r WHERE r.task_id = t.id)")


def _accepted(row: tuple) -> AcceptedTask:
    (task_id, function, input, priority, url, headers, timeout_s, worker, group, created_at, key,
     fingerprint, runs) = row
    return AcceptedTask(
        id=task_id, function=function, input=msgspec.json.decode(input), priority=priority,
        webhook_url=url, webhook_headers=_decode_headers(headers), timeout_s=timeout_s, worker=worker,
        group=group, created_at=created_at, idempotency_key=key, request_fingerprint=fingerprint,
        runs=runs,
    )


def _recover(conn, keep_s: float, now: float) -> Recovered:
    settled_old = (f"SELECT o.task_id FROM {_OUTCOMES} o JOIN {_DELIVERY_STATE} d USING (task_id)"
                   " WHERE d.final_status IS NOT NULL AND o.finished_at < ?")
    pruned = conn.execute(f"DELETE FROM webhook_tasks WHERE id IN ({settled_old}) RETURNING id",
                          [now - keep_s]).fetchall()
    for table in _TABLES:  # rows of tasks gone (pruned now, or forgotten)
        conn.execute(f"DELETE FROM {table} WHERE task_id NOT IN (SELECT id FROM webhook_tasks)")
    # Settled before the process stopped, its headers not yet dropped: drop them now.
    conn.execute(f"UPDATE webhook_tasks SET webhook_headers = {_NO_HEADERS}"
                 f" WHERE webhook_headers <> {_NO_HEADERS} AND id IN ({_SETTLED})")
    to_run = [_accepted(row) for row in conn.execute(
        f"SELECT {_TASK_FIELDS} FROM webhook_tasks t"
        " WHERE NOT EXISTS (SELECT 1 FROM webhook_outcomes o WHERE o.task_id = t.id)"
        " ORDER BY t.created_at").fetchall()]
    to_deliver = []
    for row in conn.execute(
        "SELECT t.id, t.webhook_url, t.webhook_headers, o.status, o.result, o.error, o.duration_ms,"
        " greatest(coalesce(d.last_attempt, 0), 1), coalesce(d.answered, 0), d.last_at"
        f" FROM webhook_tasks t JOIN {_OUTCOMES} o ON o.task_id = t.id"
        f" LEFT JOIN {_DELIVERY_STATE} d ON d.task_id = t.id"
        " WHERE d.final_status IS NULL ORDER BY o.finished_at"
    ).fetchall():
        task_id, url, headers, status, result, error, duration_ms, last_attempt, answered, last_at = row
        to_deliver.append(PendingDelivery(
            task_id=task_id, url=url, headers=_decode_headers(headers),
            body=_result_body(task_id, status, result, error, duration_ms),
            next_attempt=last_attempt + 1, failures=answered, last_attempt_at=last_at,
        ))
    keys = [JournaledKey(key=key, fingerprint=fingerprint, task_id=task_id) for key, fingerprint, task_id in
            conn.execute("SELECT idempotency_key, request_fingerprint, id FROM webhook_tasks"
                         " WHERE idempotency_key IS NOT NULL ORDER BY created_at").fetchall()]
    return Recovered(to_run=to_run, to_deliver=to_deliver, keys=keys, pruned=len(pruned))


def _result_body(task_id, status, result, error, duration_ms) -> TaskResult:
    return TaskResult(
        id=task_id, status=status, success=status == "completed",
        result=None if result is None else msgspec.json.decode(result),
        error=None if error is None else _decode_error(error), duration_ms=duration_ms,
    )


def _moment(epoch: float | None) -> str | None:
    return None if epoch is None else rfc3339(datetime.fromtimestamp(epoch, timezone.utc))


def _get(conn, task_id: str) -> TaskView | None:
    row = conn.execute(
        "SELECT t.function, coalesce(o.worker, t.placed_on, t.worker), coalesce(o.status, 'queued'), t.priority,"
        " t.created_at, o.started_at, o.finished_at,"
        " o.duration_ms, o.result, o.error, t.webhook_url,"
        " (SELECT max(final_status) FROM webhook_deliveries WHERE task_id = t.id)"
        " FROM webhook_tasks t LEFT JOIN (SELECT * FROM webhook_outcomes WHERE task_id = ?"
        "  ORDER BY seq LIMIT 1) o ON o.task_id = t.id WHERE t.id = ?", [task_id, task_id]).fetchone()
    if row is None:
        return None
    (function, worker, status, priority, created_at, started_at, finished_at, duration_ms, result, error, url,
     final_status) = row
    deliveries = [
        Delivery(attempt=attempt, at=_moment(at), status_code=status_code, error=error_text)
        for attempt, at, status_code, error_text in conn.execute(
            "SELECT attempt, min(attempted_at), max(status_code), max(error) FROM webhook_deliveries"
            " WHERE task_id = ? GROUP BY attempt ORDER BY attempt", [task_id]).fetchall()
    ]
    return TaskView(
        id=task_id, function=function, mode="webhook", worker=worker or "", status=status,
        success=status == "completed", priority=priority, created_at=_moment(created_at),
        started_at=_moment(started_at), finished_at=_moment(finished_at), duration_ms=duration_ms,
        result=None if result is None else msgspec.json.decode(result),
        error=None if error is None else _decode_error(error),
        webhook_url=url, webhook_status=final_status or "pending", deliveries=deliveries,
    )
