"""`amp-runtime bench --compare`: the figure beside its ceilings, measured in the same run.

Ceilings: the same server's Quart-Trio no-op route (`POST /noop`: decode and encode, no task)
and a bare hypercorn-trio ASGI app doing the same msgspec decode/encode (the stack's limit).
Every server it starts runs in its own process, so the load generator never shares a loop
with what it measures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from typing import AsyncIterator

import msgspec
import trio

from .report import BenchSummary

READY = re.compile(rb"listening on (http://\S+)")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class Comparison(msgspec.Struct, kw_only=True):
    task: BenchSummary
    noop: BenchSummary
    bare: BenchSummary
    task_vs_noop: float  # tasks/s over the no-op route's requests/s
    task_vs_bare: float
    noop_vs_bare: float


def ratio(value: float, ceiling: float) -> float:
    return round(value / ceiling, 3) if ceiling else 0.0


def compare(task: BenchSummary, noop: BenchSummary, bare: BenchSummary) -> Comparison:
    return Comparison(task=task, noop=noop, bare=bare, task_vs_noop=ratio(task.per_s, noop.per_s),
                      task_vs_bare=ratio(task.per_s, bare.per_s), noop_vs_bare=ratio(noop.per_s, bare.per_s))


def ratio_lines(c: Comparison) -> str:
    def line(label: str, ceiling: BenchSummary, r: float) -> str:
        return (f"{label:<46} {ceiling.per_s:>10.1f}/s  ratio {r:.3f}x   "
                f"p50 {c.task.p50_ms:.2f} vs {ceiling.p50_ms:.2f} ms   p99 {c.task.p99_ms:.2f} vs {ceiling.p99_ms:.2f} ms")

    return "\n".join([
        f"{c.task.name} ({c.task.per_s:.1f}/s) beside its ceilings, same run:",
        line("  vs Quart-Trio no-op (POST /noop, same server)", c.noop, c.task_vs_noop),
        line("  vs bare hypercorn-trio ASGI (same decode/encode)", c.bare, c.task_vs_bare),
        f"  (the no-op route itself is {c.noop_vs_bare:.3f}x the bare app)",
    ])


@asynccontextmanager
async def server_process(argv: list[str], env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """Run a server printing `listening on URL`; yields the URL, stops it (SIGTERM, then kill)."""
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    output = bytearray()
    try:
        with trio.fail_after(START_TIMEOUT_S):
            while not READY.search(output):
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"{argv[2]} exited before it listened:\n{output.decode(errors='replace')}")
                output += chunk
        url = READY.search(output).group(1).decode()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain_output, proc)  # a full pipe must never block the server
            yield url
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):  # bounded: SIGTERM, then SIGKILL
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(STOP_TIMEOUT_S):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stdout.aclose()


async def _drain_output(proc: trio.Process) -> None:
    while await proc.stdout.receive_some(65536):
        pass


@asynccontextmanager
async def runtime_process(slots: int) -> AsyncIterator[str]:
    """`amp-runtime serve` on 127.0.0.1:0 with a temporary data dir and `slots` slots."""
    with tempfile.TemporaryDirectory(prefix="amp-bench-") as data_dir:
        config = os.path.join(data_dir, "bench.toml")
        with open(config, "w") as f:
            f.write(f'[[workers]]\nid = "bench-01"\nslots = {slots}\nmax_queue = 100000\n')
        argv = [sys.executable, "-m", "amp_runtime", "serve", "--bind", "127.0.0.1:0",
                "--data-dir", os.path.join(data_dir, "data"), "--config", config]
        env = {"AMP_LOG_LEVEL": "warning", "AMP_WEBHOOK_ALLOW_PRIVATE": "true"}
        async with server_process(argv, env) as url:
            yield url


def bare_process():
    return server_process([sys.executable, "-m", "amp_runtime.bench.bare_asgi"])
