"""Shared test helpers: servers in-process and as subprocesses, both on 127.0.0.1 port 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import trio

from amp_runtime.config import Config, load_config
from amp_runtime.core.store import Store
from amp_runtime.runtime import Runtime

READY = re.compile(rb"listening on (http://\S+) \(data: (.*)\)")


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """A config for tests: loopback, port 0, a private data dir; `sections` override keys."""
    overrides: dict[str, Any] = {"server": {"bind": "127.0.0.1:0", "data_dir": str(data_dir), "shutdown_grace_s": 5.0}}
    for name, values in sections.items():
        if isinstance(values, dict):
            overrides.setdefault(name, {}).update(values)
        else:
            overrides[name] = values
    return load_config(None, environ={}, overrides=overrides)


@dataclass
class InProcessServer:
    runtime: Runtime
    url: str
    client: httpx.AsyncClient

    async def stop(self) -> None:
        self.runtime.request_stop()


async def start_server(nursery: trio.Nursery, data_dir: Path, **sections: Any) -> InProcessServer:
    runtime = Runtime(make_config(data_dir, **sections))
    urls = await nursery.start(lambda task_status: runtime.run(task_status=task_status))
    headers = {}
    if runtime.config.auth.api_key:
        headers["Authorization"] = runtime.config.auth.api_key
    client = httpx.AsyncClient(base_url=urls[0], headers=headers, timeout=30)
    return InProcessServer(runtime, urls[0], client)


@dataclass
class ServerProcess:
    """`python -m amp_runtime serve` in a child process; `url` is read from its ready line."""

    proc: trio.Process
    url: str = ""
    output: bytearray = field(default_factory=bytearray)
    output_read: trio.Event = field(default_factory=trio.Event)  # its stdout reached its end

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self, timeout: float = 30) -> int:
        """Its exit code, once it has exited and its output has been read to the end (what it
        printed last may still be in the pipe when it exits)."""
        with trio.fail_after(timeout):
            code = await self.proc.wait()
        with trio.move_on_after(5):  # a child still holding the pipe (a process slot) must not hold us
            await self.output_read.wait()
        return code


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "amp_runtime", "serve", *args]


async def spawn_server(
    nursery: trio.Nursery, data_dir: Path, *extra: str, env: dict[str, str] | None = None,
    cwd: Path | None = None, wait_ready: bool = True, timeout: float = 30, preexec_fn=None,
) -> ServerProcess:
    """Start a server process; with `wait_ready`, return once it printed its ready line.
    `preexec_fn` runs in the child before the server starts (e.g. to lower its resource limits)."""
    args = ["--bind", "127.0.0.1:0", "--data-dir", str(data_dir), *extra]
    full_env = {**os.environ, **(env or {})}
    proc = await trio.lowlevel.open_process(
        server_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
        cwd=str(cwd) if cwd else None, preexec_fn=preexec_fn,
    )
    server = ServerProcess(proc)
    ready = trio.Event()

    async def pump() -> None:
        try:
            async for chunk in proc.stdout:
                server.output.extend(chunk)
                match = READY.search(server.output)
                if match and not ready.is_set():
                    server.url = match.group(1).decode()
                    ready.set()
        finally:
            ready.set()
            server.output_read.set()

    async def reap() -> None:
        # The test's nursery is cancelled at teardown: a server still running then is killed,
        # so no process outlives its test.
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()

    nursery.start_soon(pump)
    nursery.start_soon(reap)
    if wait_ready:
        with trio.fail_after(timeout):
            await ready.wait()
        if not server.url:
            raise AssertionError(f"server exited before ready:\n{server.output.decode(errors='replace')}")
    return server


async def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 30):
    """Run `python -m amp_runtime ARGS` to completion; returns (exit code, combined output)."""
    with trio.fail_after(timeout):
        result = await trio.run_process(
            [sys.executable, "-m", "amp_runtime", *args], capture_stdout=True,
            stderr=subprocess.STDOUT, check=False, cwd=str(cwd) if cwd else None,
            env={**os.environ, **(env or {})},
        )
    return result.returncode, result.stdout.decode(errors="replace")


async def wait_until(predicate, *, timeout: float = 10, interval: float = 0.01) -> None:
    """Poll an (async or sync) predicate until true, failing after `timeout`."""
    with trio.fail_after(timeout):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await trio.sleep(interval)


@asynccontextmanager
async def running_store(path: Path) -> AsyncIterator[Store]:
    """A migrated DuckDB store at `path` with its store actor running: for constructing one
    family's service in a unit test, without the runtime."""
    store = Store(path, group_commit_ms=1)
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run)
            yield store
            store.close()
    finally:
        await store.close_connection()
