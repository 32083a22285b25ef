"""`AsyncClient`: calls to an amp_runtime server from async Python, under trio or asyncio.

httpx carries the calls (one pool of keep-alive connections per client); waits go through anyio,
so the same client runs under either event loop. Every POST that may be retried carries an
idempotency key, so a retry after a 429, a 503 or a lost connection never runs a task twice."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable

import anyio
import httpx

from . import protocol
from .errors import Unavailable
from .protocol import Item

DEFAULT_URL = "http://127.0.0.1:1610"
NDJSON = {"Content-Type": "application/x-ndjson"}
TERMINAL_JOB = ("Completed", "Stopped", "Failed")


class AsyncClient:
    """`async with AsyncClient(url, api_key=...) as client: await client.call("echo", {...})`.

    `retries`: how often a 429/503 answer (after its Retry-After) or a failed connection is tried
    again before `Unavailable` is raised. `timeout`: seconds to wait for an answer."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 5, transport: httpx.AsyncBaseTransport | None = None):
        headers = {"Authorization": api_key} if api_key else {}
        self.retries = retries
        self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, transport=transport,
                                       limits=httpx.Limits(max_connections=None, max_keepalive_connections=100))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- tasks ---------------------------------------------------------------------------------
    async def call(self, function: str, input: Any = None, *, priority: int | None = None,
                   group: str | None = None, worker: str | None = None, timeout: float | None = None,
                   result_type: Any = None, idempotency_key: str | None = None) -> Any:
        """Run `function(input)` and return its result; raises `TaskFailed` (and its kinds
        `TaskTimedOut`, `TaskCancelled`), `Rejected` or `Unavailable`."""
        body = protocol.task_body(function, input, priority=priority, group=group, worker=worker)
        response = await self._post("/task", protocol.encode(body), key=idempotency_key or protocol.new_key(),
                                    timeout=timeout)
        return protocol.outcome(response.status_code, response.content, response.headers, result_type)

    async def stream(self, function: str, input: Any = None, *, priority: int | None = None,
                     group: str | None = None, worker: str | None = None,
                     result_type: Any = None) -> AsyncIterator[Any]:
        """The items `function(input)` yields, as they come. Leaving the loop early closes the
        stream, and the server cancels the task and frees its slot."""
        body = protocol.encode(protocol.task_body(function, input, mode="stream", priority=priority,
                                                  group=group, worker=worker))
        async with self._http.stream("POST", "/task", content=body,
                                     headers={"Accept": "text/event-stream"}) as response:
            if response.status_code != 200:
                raise protocol.refusal(response.status_code, await response.aread(), response.headers)
            events = protocol.SSE()
            async for line in response.aiter_lines():
                event = events.feed(line)
                if event is not None:
                    done, item = protocol.stream_event(*event, result_type=result_type)
                    if done:
                        return
                    yield item

    async def map(self, function: str, inputs: Iterable[Any], *, batch: int = 1000, result_type: Any = None,
                  priority: int | None = None, group: str | None = None) -> AsyncIterator[Item]:
        """`function` over every input through `POST /tasks`, one `Item` per input as it finishes
        (`.index` says which). Items refused for want of room are sent again (same keys)."""
        values = list(inputs)
        keys = [protocol.new_key() for _ in values]
        for start in range(0, len(values), batch):
            pending = list(range(start, min(start + batch, len(values))))
            attempt = 0
            while pending:
                body = protocol.batch_body(function, [values[i] for i in pending], [keys[i] for i in pending],
                                           priority=priority, group=group)
                again: list[int] = []
                answered: set[int] = set()
                try:
                    async for item in self._batch(body, result_type):
                        index = pending[item.index]
                        answered.add(index)
                        if isinstance(item.error, Unavailable) and attempt < self.retries:
                            again.append(index)
                            continue
                        yield Item(index, item.id, item.result, item.error)
                except Unavailable as exc:
                    if attempt >= self.retries:
                        for index in pending:
                            if index not in answered:
                                yield Item(index, None, error=exc)
                        break
                    again.extend(i for i in pending if i not in answered)
                if again:
                    attempt += 1
                    await anyio.sleep(protocol.retry_wait(503, {}, attempt) or 0.0)
                pending = sorted(again)

    async def _batch(self, body: bytes, result_type: Any) -> AsyncIterator[Item]:
        try:
            async with self._http.stream("POST", "/tasks", content=body, headers=NDJSON) as response:
                if response.status_code != 200:
                    raise protocol.refusal(response.status_code, await response.aread(), response.headers)
                lines = protocol.Lines()
                async for chunk in response.aiter_bytes():
                    for line in lines.feed(chunk):
                        yield protocol.batch_item(line, result_type)
                for line in lines.end():
                    yield protocol.batch_item(line, result_type)
        except httpx.TransportError as exc:
            raise Unavailable(None, "UNREACHABLE", f"{type(exc).__name__}: {exc}") from None

    async def submit(self, function: str, input: Any = None, *, webhook: str, headers: dict[str, str] | None = None,
                     priority: int | None = None, group: str | None = None, worker: str | None = None,
                     idempotency_key: str | None = None) -> str:
        """Accept `function(input)` to run later; its outcome is POSTed to `webhook`. The task id."""
        hook: dict[str, Any] = {"url": webhook}
        if headers:
            hook["headers"] = headers
        body = protocol.task_body(function, input, mode="webhook", webhook=hook, priority=priority, group=group,
                                  worker=worker)
        response = await self._post("/task", protocol.encode(body), key=idempotency_key or protocol.new_key())
        if response.status_code != 202:
            raise protocol.refusal(response.status_code, response.content, response.headers)
        return response.json()["id"]

    async def get(self, task_id: str) -> dict[str, Any]:
        """A task's state (`GET /tasks/{id}`): status, result or error, webhook deliveries."""
        return await self._json("GET", f"/tasks/{task_id}")

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a queued or running task; its state after the cancel."""
        return await self._json("DELETE", f"/tasks/{task_id}")

    # -- jobs, durable workers, registry --------------------------------------------------------
    async def create_job(self, dataset: str, start_block: int, end_block: int | None = None,
                         **fields: Any) -> dict[str, Any]:
        return await self._json("POST", "/jobs", json={"dataset": dataset, "start_block": start_block,
                                                       "end_block": end_block, **fields}, ok=(201,))

    async def get_job(self, job_id: int) -> dict[str, Any]:
        return await self._json("GET", f"/jobs/{job_id}")

    async def job_progress(self, job_id: int) -> dict[str, Any]:
        return await self._json("GET", f"/jobs/{job_id}/progress")

    async def stop_job(self, job_id: int) -> None:
        await self._json("POST", f"/jobs/{job_id}/stop", ok=(200, 202, 204))

    async def watch_job(self, job_id: int, *, interval: float = 0.5) -> AsyncIterator[tuple[dict, dict]]:
        """(job, progress) every `interval` seconds until the job is Completed, Stopped or Failed."""
        while True:
            job = await self.get_job(job_id)
            yield job, await self.job_progress(job_id)
            if job["status"] in TERMINAL_JOB:
                return
            await anyio.sleep(interval)

    async def create_worker(self, template_id: str, name: str, **fields: Any) -> dict[str, Any]:
        """Create a durable worker of a template."""
        return await self._json("POST", f"/v1/templates/{template_id}/workers", json={"name": name, **fields})

    async def invocation_key(self, template_id: str, worker: str) -> str:
        """A new invocation key of a durable worker: `invoke(..., key=)` with it runs once."""
        return (await self._json("POST", f"/v1/templates/{template_id}/workers/{worker}/key"))["value"]

    async def invoke(self, template_id: str, worker: str, function: str, params: Iterable[Any] = (), *,
                     key: str | None = None) -> Any:
        """Invoke a durable worker's function and await its result. With the same `key` (from
        `invocation_key`), a retry, after a restart too, runs it once and answers the recorded result."""
        path = f"/v1/templates/{template_id}/workers/{worker}"
        key = key or await self.invocation_key(template_id, worker)
        answer = await self._json("POST", path + "/invoke-and-await", json={"params": list(params)},
                                  params={"invocation-key": key, "function": function})
        result = answer.get("result")
        return result[0] if isinstance(result, list) and len(result) == 1 else result

    async def workers(self) -> list[dict[str, Any]]:
        """The registry's workers with their last heartbeat (`GET /workers`)."""
        return (await self._json("GET", "/workers"))["workers"]

    async def worker(self, worker_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/workers/{worker_id}")

    # -- sending -------------------------------------------------------------------------------
    async def _json(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        response = await self._send(method, path, retry=method in ("GET", "DELETE"), **kwargs)
        if response.status_code not in ok:
            raise protocol.refusal(response.status_code, response.content, response.headers)
        return protocol.decode(response.content)

    async def _post(self, path: str, content: bytes, *, key: str, timeout: float | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        extra = {} if timeout is None else {"timeout": timeout}
        return await self._send("POST", path, content=content, headers=headers, retry=True, **extra)

    async def _send(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> httpx.Response:
        """One request, retried (when `retry`) on 429/503 after Retry-After and on a failed
        connection, at most `retries` times."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if not retry or attempt >= self.retries:
                    raise Unavailable(None, "UNREACHABLE", f"{type(exc).__name__}: {exc}") from None
                wait = protocol.retry_wait(503, {}, attempt) or 0.0
            else:
                wait = protocol.retry_wait(response.status_code, response.headers, attempt) if retry else None
                if wait is None or attempt >= self.retries:
                    return response
            attempt += 1
            await anyio.sleep(wait)
