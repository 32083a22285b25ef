"""Builds the actors from config and runs them with the HTTP server in one root nursery.

Start order: the store (open + migrate; fatal if it fails), then each service, then HTTP.
Stop order (SIGINT/SIGTERM or `request_stop()`): the server stops accepting connections and
closes the idle ones (answers from then on say `Connection: close`), services stop taking new
work, in-flight requests finish, running work gets what is left of
`shutdown_grace_s` (jobs pause at a batch boundary), the rest is cancelled (a thread that
ignores it is abandoned), the store flushes and checkpoints within `STORE_CLOSE_S`; the
process exits within `shutdown_grace_s` + 2 s of the signal.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Protocol

import trio
from hypercorn.config import Config as HypercornConfig

from . import __version__, early_signals
from .config import Config, parse_bind
from .core.logs import LogRing, setup_logging
from .app import create_app
from .core.backends import store_backend
from .core.connections import Connections, default_max_connections
from .core.store import Store
from .wiring import build_services

log = logging.getLogger("amp_runtime.runtime")

STORE_CLOSE_S = 1.0  # after the grace: the store actor commits what is queued, then it is cut off


class Service(Protocol):
    """What the runtime needs of each family's service."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def stop_accepting(self) -> None: ...

    async def drain(self) -> None: ...


class Runtime:
    def __init__(self, config: Config, *, log_ring: LogRing | None = None):
        self.config = config
        self.version = __version__
        load_user_modules(config.functions.modules, config.functions.paths)
        self.logs = log_ring or setup_logging(config.log.level, config.log.ring_size, format=config.log.format,
                                              file=config.log.file)
        self.started_monotonic = time.monotonic()
        self.store = Store(
            store_backend(config.store.url, config.store_path),
            group_commit_rows=config.store.group_commit_rows,
            group_commit_ms=config.store.group_commit_ms,
            reconnect_s=config.store.reconnect_s,
        )
        self.bound_urls: list[str] = []
        self.services = build_services(
            config, self.store, version=self.version,
            uptime_s=lambda: self.uptime_s, logs=self.logs, bound_urls=lambda: self.bound_urls,
            draining=lambda: self._stop.is_set(),
        )
        self._running: list[Service] = self.services.running()
        self._stop = trio.Event()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def request_stop(self) -> None:
        self._stop.set()

    async def run(
        self, *, handle_signals: bool = False, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.store.open()
        try:
            # Peers on one PostgreSQL store: a worker id runs in one live process at a time.
            await self.store.claim_worker_ids([worker.id for worker in self.config.workers])
            async with trio.open_nursery() as root:
                root.start_soon(self._run_store)
                if handle_signals:
                    root.start_soon(self._watch_signals)
                async with trio.open_nursery() as services:
                    for service in self._running:
                        await services.start(service.run)
                    http_done = trio.Event()
                    app = self.services.cluster.mount(self._create_app())
                    self.bound_urls = await services.start(self._serve_http, app, http_done)
                    task_status.started(self.bound_urls)
                    await self._stop.wait()
                    try:
                        await self._drain(http_done)
                    finally:
                        self.store.stop_waiting()  # a store that does not answer must not hold the exit
                    services.cancel_scope.cancel()
                self.store.close()  # the store actor commits what is queued, then returns
                root.cancel_scope.deadline = trio.current_time() + STORE_CLOSE_S
        finally:
            # Shielded so a cancelled run still checkpoints; bounded by the DB thread: once the
            # store actor has committed, CHECKPOINT and close take milliseconds.
            with trio.CancelScope(shield=True):
                await self.store.close_connection()
            log.info("stopped")

    def _create_app(self):
        return create_app(self.config, self.services.by_family())

    async def _run_store(self) -> None:
        # The store actor outlives a lost store (it reconnects); it ends on close, or past a
        # non-zero `[store] reconnect_s` (StoreGone), or when a peer took a worker id meanwhile.
        await self.store.run()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            if early_signals.noted.is_set():  # came while the process started (entry.py)
                log.info("received SIGTERM while starting: draining")
                self.request_stop()
                return
            async for signum in signals:
                log.info("received %s: draining", signal.Signals(signum).name)
                self.request_stop()
                return

    async def _serve_http(self, app, http_done: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        app = self.in_flight = InFlightRequests(app)
        host, port = parse_bind(self.config.server.bind)
        hconfig = HypercornConfig()
        hconfig.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        # The drain's grace decides what is cut short (and logs it); hypercorn's own timer only backs it up.
        hconfig.graceful_timeout = self.config.server.shutdown_grace_s + 1.0
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("amp_runtime.hypercorn")
        hconfig.loglevel = "WARNING"
        hconfig.keep_alive_timeout = self.config.http.keep_alive_s
        max_connections = self.config.http.max_connections or default_max_connections(
            self.services.tasks.process_slots.size)
        self.connections = Connections(app, hconfig, max_connections, retry_after_s=self.config.tasks.retry_after_s,
                                       body_timeout_s=self.config.http.body_timeout_s,
                                       send_timeout_s=self.config.http.send_timeout_s)
        try:
            await self.connections.serve(task_status=task_status)
        finally:
            http_done.set()

    async def _drain(self, http_done: trio.Event) -> None:
        grace = self.config.server.shutdown_grace_s
        self.connections.drain()
        for service in self._running:
            service.stop_accepting()
        with trio.move_on_after(grace) as scope:
            # Side by side, from the signal on: a peer's jobs are handed over at once, not after
            # the in-flight tasks (the services stopped admitting above, without a checkpoint).
            async with trio.open_nursery() as drains:
                # In-flight requests, not connections: an idle keep-alive client must not hold us.
                drains.start_soon(self.in_flight.wait_none)
                for service in self._running:
                    drains.start_soon(service.drain)
        if scope.cancelled_caught:
            log.warning("grace period of %.1fs over: cancelling the rest%s", grace, await self._still_running())

    async def _still_running(self) -> str:
        """What the cancel cuts short, for the log: work in a thread is abandoned, not awaited."""
        with trio.move_on_after(0.5):
            running = [f"{s.worker}: {', '.join(s.running)}" for s in await self.services.tasks.snapshot() if s.running]
            if running:
                return f" (still running on {'; '.join(running)}; threads that ignore it are abandoned)"
        return ""


class InFlightRequests:
    """ASGI wrapper counting HTTP requests being answered, so a drain can wait for them."""

    def __init__(self, app):
        self.app = app
        self.count = 0
        self._none = trio.Event()
        self._none.set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.count += 1
        self._none = trio.Event() if self.count == 1 else self._none
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if self.count == 0:
                self._none.set()

    async def wait_none(self) -> None:
        while self.count:
            await self._none.wait()


def load_user_modules(names: list[str], paths: list[str] = ()) -> None:
    """Import the modules listed in `[functions] modules` (found also in `paths`) so their decorators register."""
    from .user_functions import load_modules

    load_modules(names, list(paths))

