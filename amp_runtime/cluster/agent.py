"""The node agent: what a process with `[cluster] join` does for the coordinator.

Two loops, both reconnecting on their own (a coordinator restart costs a few seconds):
- reporting: `workers.register` for each local worker (with `[cluster] register_timeout_s`),
  then `workers.status_report` every `[registry] heartbeat_s` with psutil machine stats, the
  running task and the queues (the worker's groups); re-registers after a failed report.
  `workers.unregister` on graceful shutdown.
- channel: a WebSocket to the coordinator's `/ws/cluster/node`, opened by the node (no
  inbound reachability needed for jobs). It receives job assignments and stop requests and
  runs each job with the same runner as local jobs, talking to the coordinator's scheduler
  and progress writer through `RemoteJob`. A lost channel cancels the node's jobs: the
  coordinator re-assigns them from their last persisted progress. A draining node pauses its
  jobs at a batch boundary, flushes their progress, then says `Leaving`: the coordinator
  moves them to another live worker at once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from ..jobs.messages import Finished
from ..jobs.runner import RunnerEnv, RunnerHandle, run_job
from ..jobs.datasets import output_dir
from ..jobs.store import ProgressRow
from ..registry.stats import MachineSampler
from . import wire
from .wire import leaf
from .auth import bearer

log = logging.getLogger("amp_runtime.cluster")
REFUSED_RETRY_S = 5.0  # a refused node retries slowly (the operator has to fix its key)
RECONNECT_MAX_S = 1.0  # a lost coordinator is retried often: it is probably restarting


class Refused(Exception):
    """The coordinator refused this node (wrong key, clashing worker ids)."""


@dataclass(eq=False)
class RemoteJob:
    """One job run on this node: the runner's env pieces that live on the coordinator.

    `ask`, `flush` and `read` wait for the coordinator's answer; if the channel drops the run
    is cancelled, so nobody waits forever."""

    job_id: int
    attempt: int
    outbox: trio.MemorySendChannel
    answers: trio.MemoryReceiveChannel
    answers_in: trio.MemorySendChannel
    handle: RunnerHandle
    finished: bool = False  # the run asked `Finished`: it ended with an outcome

    def _send(self, msg) -> None:
        try:
            self.outbox.send_nowait(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the channel is gone; this run is being cancelled

    async def ask(self, msg):
        self.finished = self.finished or isinstance(msg, Finished)
        self._send(wire.Ask(self.job_id, self.attempt, msg))
        return (await self.answers.receive()).value

    async def report(self, row: ProgressRow) -> None:
        self._send(wire.Progress(row))

    async def flush(self) -> None:
        self._send(wire.Flush(self.job_id, self.attempt))
        await self.answers.receive()

    async def read(self, fn, job_id: int):
        """The runner reads its persisted progress through here (the only store read it does)."""
        self._send(wire.ReadProgress(self.job_id, self.attempt))
        return (await self.answers.receive()).rows


class NodeAgent:
    def __init__(self, config, tasks, bound_urls: Callable[[], list[str]]):
        """`tasks`: the task service (its workers run the jobs); `bound_urls`: where this
        process's HTTP server listens, empty until it has bound."""
        self.config = config
        self.tasks = tasks
        self.bound_urls = bound_urls
        self.coordinator = self.config.cluster.join.rstrip("/")
        self._accepting = True
        self._jobs: dict[int, RemoteJob] = {}
        self._jobs_nursery: trio.Nursery | None = None
        self._outbox: trio.MemorySendChannel | None = None  # the open channel's, if any
        self._left = trio.Event()
        # Reporting starts once the coordinator welcomed this node: a refused node (wrong key,
        # clashing worker ids) must not overwrite another process's workers in the registry.
        self.welcomed = trio.Event()

    @property
    def url(self) -> str:
        return (self.config.cluster.advertise_url or self.bound_urls()[0]).rstrip("/")

    async def run(self) -> None:
        """Both loops; cancelled at shutdown."""
        while not self.bound_urls():  # the HTTP server binds after the services start
            await trio.sleep(0.02)
        async with httpx.AsyncClient(base_url=self.coordinator, headers=bearer(self.config.cluster.key),
                                     timeout=httpx.Timeout(10.0, connect=self.config.cluster.connect_timeout_s)) as client:
            self._client = client
            async with trio.open_nursery() as nursery:
                self._jobs_nursery = nursery
                nursery.start_soon(self._report_loop, client)
                nursery.start_soon(self._channel_loop)

    # -- reporting -------------------------------------------------------------------------
    async def _call(self, client: httpx.AsyncClient, endpoint: str, body: dict) -> None:
        response = await client.post(f"/{endpoint}", json=body)
        if response.status_code == 401:
            raise Refused(f"coordinator refused {endpoint} with 401: check [cluster] key")
        if response.status_code != 200:
            raise RuntimeError(f"{endpoint} answered {response.status_code}: {response.text[:200]}")

    async def _register(self, client: httpx.AsyncClient) -> None:
        for worker in self.config.workers:
            await self._call(client, "workers.register", {
                "worker": worker.id, "timeout": self.config.cluster.register_timeout_s,
                "tags": list(worker.tags), "system_tags": [f"amp-url={self.url}", "amp-node"],
                "queues": list(worker.groups),
            })

    async def _report_loop(self, client: httpx.AsyncClient) -> None:
        await self.welcomed.wait()
        sampler = await trio.to_thread.run_sync(MachineSampler)
        registered, failing = False, False
        groups = {w.id: list(w.groups) for w in self.config.workers}
        while True:
            try:
                if not registered:
                    await self._register(client)
                    registered = True
                machine = msgspec.to_builtins(await trio.to_thread.run_sync(sampler.sample))
                for snap in await self.tasks.snapshot():
                    report = {"worker": snap.worker, "timestamp": int(time.time() * 1000),
                              "machine_stats": machine, "queues": groups.get(snap.worker, [])}
                    if snap.running:
                        report["task"] = snap.running[0]
                    await self._call(client, "workers.status_report", report)
                if failing:
                    log.info("cluster: reporting to %s again", self.coordinator)
                failing = False
            except Exception as exc:  # httpx errors, refusals, bad answers: retried next heartbeat
                registered = False
                if not failing:
                    log.warning("cluster: reporting to %s failed: %s", self.coordinator, exc or type(exc).__name__,
                                exc_info=not isinstance(exc, (httpx.HTTPError, RuntimeError, Refused)))
                failing = True
            await trio.sleep(self.config.registry.heartbeat_s)

    async def unregister(self) -> None:
        """Best effort, bounded: the coordinator would expire the workers anyway."""
        with trio.move_on_after(2):
            for worker in self.config.workers:
                try:
                    await self._call(self._client, "workers.unregister", {"worker": worker.id})
                except (httpx.HTTPError, RuntimeError, Refused, AttributeError):
                    return

    # -- the channel -----------------------------------------------------------------------
    async def _channel_loop(self) -> None:
        ws_url = "ws" + self.coordinator[4:] + "/ws/cluster/node"
        backoff = 0.1
        while True:
            try:
                try:
                    await self._session(ws_url)
                except Exception as raised:  # trio-websocket may wrap it in a group
                    raise leaf(raised) from None
            except ConnectionRejected as exc:
                reason = "wrong cluster key" if exc.status_code == 401 else "refused"
                log.error("cluster: coordinator %s refused this node (%s, HTTP %s): check [cluster] key",
                          self.coordinator, reason, exc.status_code)
                backoff = REFUSED_RETRY_S
            except Refused as exc:
                log.error("cluster: %s", exc)
                backoff = REFUSED_RETRY_S
            except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, msgspec.DecodeError) as exc:
                log.warning("cluster: channel to %s lost (%s); reconnecting", self.coordinator, type(exc).__name__)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
            except Exception:  # a bug here must not take the node's own workers down
                log.exception("cluster: channel to %s failed; reconnecting", self.coordinator)
                backoff = RECONNECT_MAX_S
            finally:
                for job in list(self._jobs.values()):
                    job.handle.cancel_scope.cancel()
            await trio.sleep(backoff)

    async def _session(self, ws_url: str) -> None:
        workers = [wire.WorkerInfo(w.id, list(w.groups), w.slots, w.max_queue) for w in self.config.workers]
        headers = list(bearer(self.config.cluster.key).items())
        async with open_websocket_url(ws_url, extra_headers=headers, disconnect_timeout=1,
                                      connect_timeout=self.config.cluster.connect_timeout_s) as ws:
            await ws.send_message(wire.encode(wire.Hello(self.url, workers)).decode())
            with trio.fail_after(10):
                welcome = wire.decode_to_node(await ws.get_message())
            if not isinstance(welcome, wire.Welcome) or welcome.heartbeat_s < 0:
                raise Refused("coordinator refused this node: a worker id is already in the cluster")
            log.info("cluster: joined %s as %s", self.coordinator, self.url)
            self.welcomed.set()
            outbox_send, outbox = trio.open_memory_channel(math.inf)
            self._outbox = outbox_send
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._beat, outbox_send, welcome.heartbeat_s / 2)
                    nursery.start_soon(self._write, ws, outbox)
                    while True:
                        self._on_message(wire.decode_to_node(await ws.get_message()), outbox_send)
            finally:
                self._outbox = None

    @staticmethod
    async def _beat(outbox: trio.MemorySendChannel, every_s: float) -> None:
        while True:
            outbox.send_nowait(wire.Beat())
            await trio.sleep(every_s)

    @staticmethod
    async def _write(ws, outbox: trio.MemoryReceiveChannel) -> None:
        try:
            async for msg in outbox:
                await ws.send_message(wire.encode(msg).decode())
        except ConnectionClosed:
            pass  # the reader sees it too and ends the session

    def _on_message(self, msg, outbox: trio.MemorySendChannel) -> None:
        match msg:
            case wire.Assign(record=record, attempt=attempt):
                self._start_job(record, attempt, outbox)
            case wire.StopJob(job_id=job_id, attempt=attempt):
                job = self._jobs.get(job_id)
                if job is not None and job.attempt == attempt:
                    job.handle.request_stop()
            case wire.PauseJob(job_id=job_id, attempt=attempt):
                job = self._jobs.get(job_id)
                if job is not None and job.attempt == attempt:
                    job.handle.request_pause()
            case wire.CancelJob(job_id=job_id, attempt=attempt):
                job = self._jobs.get(job_id)
                if job is not None and job.attempt == attempt:
                    job.handle.cancel_scope.cancel()
            case wire.Left():
                self._left.set()
            case wire.Answer() | wire.ProgressRows():
                job = self._jobs.get(msg.job_id)
                if job is not None and job.attempt == msg.attempt:
                    job.answers_in.send_nowait(msg)

    def _start_job(self, record, attempt: int, outbox: trio.MemorySendChannel) -> None:
        previous = self._jobs.get(record.id)
        if previous is not None:
            previous.handle.cancel_scope.cancel()
        if not self._accepting:
            return  # draining: the coordinator moves the job once this node is gone
        if record.node_id not in self.tasks.workers:
            log.warning("cluster: job %d assigned to %s, not a worker here", record.id, record.node_id)
            return
        answers_in, answers = trio.open_memory_channel(math.inf)
        handle = RunnerHandle(record.id, attempt, record.node_id, previous.handle if previous else None)
        job = RemoteJob(record.id, attempt, outbox, answers, answers_in, handle)
        self._jobs[record.id] = job
        env = RunnerEnv(store=job, tasks=self.tasks, progress=job,
                        output_dir=output_dir(self.config),
                        blocks_per_s=self.config.jobs.continuous_blocks_per_s, ask=job.ask)
        log.info("cluster: running job %d (attempt %d) on %s", record.id, attempt, record.node_id)
        self._jobs_nursery.start_soon(self._run_job, env, job, record)

    async def _run_job(self, env: RunnerEnv, job: RemoteJob, record) -> None:
        try:
            await run_job(env, job.handle, record)
        finally:
            if self._jobs.get(record.id) is job:
                del self._jobs[record.id]
            if job.handle.pause_requested.is_set() and not job.finished:
                job._send(wire.Released(job.job_id, job.attempt))

    # -- drain -----------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Pause the jobs this node runs at their next batch boundary (their slots must free
        up for the drain)."""
        self._accepting = False
        for job in self._jobs.values():
            job.handle.request_pause()

    async def drain(self) -> None:
        """Wait for the paused jobs (their progress is flushed to the coordinator), hand them
        back, unregister. Bounded by the runtime's grace period; hand-back waits 1 s at most
        for its answer (unanswered, the coordinator moves them after `expiry_grace_s`)."""
        for job in list(self._jobs.values()):
            await job.handle.done.wait()
        if self._outbox is not None:
            try:
                self._outbox.send_nowait(wire.Leaving())
                with trio.move_on_after(1):
                    await self._left.wait()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the channel is down: the coordinator sees the node go
        await self.unregister()
