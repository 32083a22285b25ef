"""A lean ASGI layer in front of the Quart-Trio app for the hottest routes (`POST /task`, `/noop`, `/tasks`).

Quart's request machinery (contexts, routing, the Request object, body wrappers) costs more than
running an echo task; this layer answers the common case itself, with the same auth, limits, structs,
error bodies and headers as the Quart routes (tests/tasks/test_hotpath_http.py compares them byte for
byte). Whatever is not the common case goes to Quart unchanged: another route, a body without
Content-Length or over `[http] max_body_bytes` (Quart's 413), a stream task, a request with an
Idempotency-Key, a cluster that may forward. A batch's keyed items stay here: `run_batch` hands
them to `TaskService.submit` with their key, as the Quart route's batches. Installed by
`create_app` through Quart's own `app.asgi_app` hook when `[http] hot_path`.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import Any

import msgspec
import trio

from ..core.http import (
    ApiError, CodedError, decode_body, is_utf8, json_depth_exceeds, key_matches, presented_credential,
)
from ..core.sse import sse_event
from .batch import NDJSON, decode_batch
from .errors import Rejected, WorkerFailed
from .models import TaskAccepted, TaskRequest
from .service import SyncOutcome

log = logging.getLogger("amp_runtime.http")

_encoder = msgspec.json.Encoder()
_encode, _encode_lines = _encoder.encode, _encoder.encode_lines
_decoder = msgspec.json.Decoder(TaskRequest)
_JSON = b"application/json"
_UNAUTHORIZED = ApiError(401, "UNAUTHORIZED", "missing or wrong Authorization header")
_INTERNAL = ApiError(500, "INTERNAL_ERROR", "internal server error")
_NDJSON_HEADERS = [(b"cache-control", b"no-cache"), (b"content-type", NDJSON.encode())]  # as the Quart route's
_SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"content-type", b"text/event-stream")]


class HotPath:
    """ASGI middleware: `app.asgi_app = HotPath(app.asgi_app, app, tasks, cluster)`; `cluster`
    forwards tasks to nodes when it has a forwarder (those requests go through Quart)."""

    def __init__(self, asgi_app: Any, app: Any, tasks: Any, cluster: Any):
        self.next = asgi_app
        self.app = app
        self.tasks = tasks
        self.cluster = cluster
        config = tasks.config
        http = config.http
        self.max_body = http.max_body_bytes
        self.max_depth = http.max_json_depth
        self.api_key = config.auth.api_key
        self.retry_after = str(config.tasks.retry_after_s).encode()
        self.max_batch = http.max_batch
        self.disconnects = DisconnectWatch(tasks.start_background)
        # Only a peer on PostgreSQL ever has a forwarder (`ClusterService.routing`): elsewhere the
        # hot path need not ask for one per request.
        self.may_forward = bool(getattr(cluster, "routing", False))
        # `/tasks` streams its answer, so `__call__` hands it to `_submit_batch` before the others'
        # one-answer path.
        self.routes = {"/task": self._submit_task, "/noop": self._noop, "/tasks": self._submit_batch}
        from .routes import NoopResult  # the routes module imports the service; so does this one

        self.noop_result = NoopResult

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        handler = self.routes.get(scope.get("path")) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST" or (self.may_forward and self.cluster.forwarder is not None):
            return await self.next(scope, receive, send)
        length, authorization, content_type, accept = None, None, b"", b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value
            elif name == b"accept":
                accept = value
            elif name == b"idempotency-key":  # keyed admission is the Quart route's business
                return await self.next(scope, receive, send)
        if length is None or not 0 <= length <= self.max_body:
            return await self.next(scope, receive, send)  # chunked, or Quart's own 413
        message = await receive()  # the whole body in one message, as a small request's comes
        body = message.get("body", b"") if not message.get("more_body") else await _read_body(message, receive)
        if len(body) > self.max_body:
            return await self.next(scope, _replay(body, receive), send)
        answer = None
        try:
            if self.api_key and not key_matches(presented_credential(authorization), self.api_key):
                raise _UNAUTHORIZED
            if scope["path"] == "/tasks":
                ndjson = content_type.split(b";")[0].strip().lower() == NDJSON.encode()  # Quart's mimetype
                return await self._submit_batch(body, ndjson, b"text/event-stream" in accept, receive, send)
            try:
                if not body.strip() or json_depth_exceeds(body, self.max_depth) or not is_utf8(body):
                    raise ValueError("empty, too deep or not UTF-8")  # `_bad_body` words it
                request = _decoder.decode(body)
            except (ValueError, msgspec.MsgspecError):  # msgspec's errors are ValueErrors too
                request = await self._bad_body(body)
            if request.mode == "stream" and scope["path"] == "/task":
                return await self.next(scope, _replay(body, receive), send)  # Quart streams it
            if self.may_forward and request.worker is not None and request.worker not in self.tasks.workers:
                return await self.next(scope, _replay(body, receive), send)  # another peer's: Quart routes it
            try:
                answer = await handler(request, receive)  # None: the client left
            except ApiError as err:
                answer = _error(err)
            except Exception:
                log.exception("unhandled error on POST %s", scope["path"])
                answer = _error(_INTERNAL)
        except ApiError as err:
            answer = _error(err)
        if answer is None:
            return  # the client left: nobody to answer
        status, payload, headers = answer
        data = _encode(payload)
        response_headers = [(b"content-type", _JSON), (b"content-length", str(len(data)).encode())]
        if headers:
            response_headers += headers
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": data})

    async def _bad_body(self, body: bytes) -> TaskRequest:
        """The route's own decoder words the error (an ApiError), as Quart's would."""
        async with self.app.app_context():
            return decode_body(_decoder, body)

    async def _submit_task(self, request: TaskRequest, receive: Any) -> tuple[int, Any, "Headers | None"] | None:
        """None when the client left before its answer (its task is cancelled)."""
        try:
            # No key and no forwarding here (see `__call__`): a sync request takes the lean way.
            if request.mode == "sync":
                client = Client(receive, self.disconnects)
                try:
                    submitted = await self.tasks.submit_sync(request, client)
                finally:
                    client.done()
                if client.gone:
                    return None
            else:  # a webhook task: a client gone before its 202 stops the admission (the checks,
                # the webhook host's lookup); once journaled under a shield, its task runs anyway
                client = Client(receive, self.disconnects)
                with trio.CancelScope() as admission:
                    client.guard(admission)
                    try:
                        submitted = await self.tasks.submit(request)
                    finally:
                        client.done()
                if admission.cancelled_caught:
                    return None
        except WorkerFailed as exc:
            raise ApiError(503, "WORKER_FAILED", str(exc), headers={"Retry-After": self.retry_after.decode()}) from None
        except Rejected as exc:
            headers = {"Retry-After": self.retry_after.decode()} if exc.status in (429, 503) else None
            raise ApiError(exc.status, exc.code, exc.message, problems=exc.problems, headers=headers) from None
        if isinstance(submitted, SyncOutcome):
            return submitted.status, submitted.result, [(b"x-task-id", submitted.result.id.encode())]
        if isinstance(submitted, TaskAccepted):
            return 202, submitted, None
        raise RuntimeError(f"the hot path cannot answer {type(submitted).__name__}")

    async def _submit_batch(self, body: bytes, ndjson: bool, sse: bool, receive: Any, send: Any) -> None:
        """`POST /tasks` as the Quart route answers it: lines as items finish, each list of lines
        that finished together written as one chunk (one write per line was ~17% of a batch)."""
        async with self.app.app_context():  # an item's error is worded by the route's decoder
            items = decode_batch(body, ndjson, self.max_batch, self.max_depth)  # ApiError: one 400 / 413
        lines = self.tasks.submit_batch(items, may_forward=False)  # forwarding batches go through Quart
        await send({"type": "http.response.start", "status": 200,
                    "headers": _SSE_HEADERS if sse else _NDJSON_HEADERS})
        async with trio.open_nursery() as nursery:  # a client gone cancels the unfinished items
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            async with aclosing(lines):
                async for chunk in lines:
                    data = b"".join([sse_event(_encode(line)) for line in chunk]) if sse \
                        else _encode_lines(chunk)
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    async def _noop(self, request: TaskRequest, receive: Any) -> tuple[int, Any, None]:
        return 200, self.noop_result(function=request.function), None


Headers = list[tuple[bytes, bytes]]  # extra response headers, encoded as ASGI sends them


def _error(err: ApiError) -> tuple[int, CodedError, Headers | None]:
    headers = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()] if err.headers else None
    return err.status, CodedError(err.code, err.message), headers


async def _read_body(message: dict, receive: Any) -> bytes:
    """The body whose first message is `message` and more follow."""
    parts = [message.get("body", b"")]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


class DisconnectWatch:
    """Cancels a sync request's task when its client leaves, without a task or a cancel scope per
    request.

    A request that may wait registers (`Client.follow`, `Client.guard`) and unregisters (`Client.done`) itself; one
    long-lived task (`run`, started on first use by `start_background`) starts a watcher only for
    the requests still going when it gets to run, i.e. those that waited on something. A watcher
    task per request (a nursery, a task, a cancellation) cost more than the rest of a sync echo;
    so did a cancel scope around it (~5 us): the client's task is cancelled through its worker
    instead, as DELETE /tasks/{id} does. Its methods but `run` never await: atomic between
    checkpoints."""

    def __init__(self, start_background: Any) -> None:
        self._start_background = start_background
        self._started = False
        self._waiting: list[Client] = []
        self._wake = trio.Event()

    def watch(self, client: "Client") -> None:
        if not self._started:
            self._started = True
            try:
                self._start_background(self.run)  # it picks up what waits meanwhile
            except RuntimeError:  # the service is stopping: its tasks are being cancelled anyway
                pass
        self._waiting.append(client)
        self._wake.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                waiting, self._waiting = self._waiting, []
                for client in waiting:
                    if not client.finished:
                        client.watcher = trio.CancelScope()
                        nursery.start_soon(client.watch)


class Client:
    """The client of one request: a sync one's task service names the task it waits for (`follow`),
    a webhook one's admission is a scope (`guard`); the request calls `done()` once it has its
    answer, and answers nobody if `gone`."""

    __slots__ = ("receive", "disconnects", "finished", "gone", "watcher", "worker", "task", "scope")

    def __init__(self, receive: Any, disconnects: DisconnectWatch):
        self.receive = receive
        self.disconnects = disconnects
        self.finished = False
        self.gone = False
        self.watcher: trio.CancelScope | None = None
        self.worker: Any = None
        self.task: Any = None
        self.scope: trio.CancelScope | None = None

    def follow(self, worker: Any, task: Any) -> None:
        """Cancel `task` on `worker` if the client leaves before it settles. Never awaits."""
        self.worker, self.task = worker, task
        self.disconnects.watch(self)

    def guard(self, scope: trio.CancelScope) -> None:
        """Cancel `scope` if the client leaves before `done()` (a webhook task's admission)."""
        self.scope = scope
        self.disconnects.watch(self)

    def done(self) -> None:
        self.finished = True
        if self.watcher is not None:
            self.watcher.cancel()

    async def watch(self) -> None:
        with self.watcher:
            try:
                while (await self.receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # contained: it runs in the task service's nursery, not the request's
                log.exception("watching a request for its client leaving failed; treated as gone")
            self.gone = True
            if self.scope is not None:
                self.scope.cancel()
                return
            try:  # its run settles it `cancelled`, and the request returns answering nobody
                self.worker.cancel(self.task.id, reason="the client went away")
            except Exception:  # WorkerFailed: the failing worker settles the task itself
                pass


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _replay(body: bytes, receive: Any) -> Any:
    """A `receive` that gives the body already read, then the client's next messages."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
