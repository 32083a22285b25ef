"""Sync tasks per second through a coordinator that forwards every task to its nodes.

    .venv/bin/python benchmarks/cluster_bench.py [--duration 5] [--concurrency 64] [--function echo]

Starts, as separate processes on loopback ports: a coordinator whose only local worker serves
no built-in function (so every task is forwarded), then 1 node, then 2 nodes (each one worker,
`--slots` slots), and drives `POST /task` (sync) on the coordinator with `amp_runtime.bench.load`
for `--duration` seconds per case. Also measured: the same load straight to one node (no hop),
the ceiling forwarding is compared with. Everything runs on this machine, so the load
generator, the coordinator and the nodes share its cores: with few cores, adding a node adds
capacity only when the function waits (`--function sleep`) rather than computes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from amp_runtime.bench.load import run_load

READY = re.compile(rb"listening on (http://\S+)")
KEY = "bench-cluster-key"


async def spawn(nursery: trio.Nursery, data_dir: Path, config: str, env: dict[str, str]) -> tuple[trio.Process, str, bytearray]:
    data_dir.mkdir(parents=True)
    (data_dir / "config.toml").write_text(config)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "amp_runtime", "serve", "--bind", "127.0.0.1:0", "--data-dir", str(data_dir),
         "--config", str(data_dir / "config.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "AMP_CLUSTER_KEY": KEY, "AMP_LOG_LEVEL": "warning", **env})
    output = bytearray()
    ready = trio.Event()

    async def pump() -> None:
        async for chunk in proc.stdout:
            output.extend(chunk)
            if READY.search(output):
                ready.set()
        ready.set()

    nursery.start_soon(pump)
    with trio.fail_after(30):
        await ready.wait()
    match = READY.search(output)
    if not match:
        raise SystemExit(f"server failed to start:\n{output.decode(errors='replace')}")
    return proc, match.group(1).decode(), output


def worker_config(worker_id: str, groups: list[str], slots: int) -> str:
    return f'[[workers]]\nid = "{worker_id}"\nslots = {slots}\nmax_queue = 100000\ngroups = {json.dumps(groups)}\n'


async def measure(url: str, body: bytes, args) -> dict:
    await run_load(url, "/task", body, concurrency=args.concurrency, duration_s=1.0)  # warm-up
    result = await run_load(url, "/task", body, concurrency=args.concurrency, duration_s=args.duration)
    latencies = sorted(result.latencies_s)
    pick = lambda q: round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None
    return {"tasks_per_s": round(result.ok / result.elapsed_s, 1), "ok": result.ok,
            "errors": result.errors + sum(n for s, n in result.statuses.items() if s != 200),
            "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


async def main(args) -> None:
    body = json.dumps({"function": args.function, "contract": 1,
                       "input": {"ms": args.sleep_ms} if args.function == "sleep" else {"i": 1}}).encode()
    results = {}
    with tempfile.TemporaryDirectory(prefix="amp-cluster-bench-") as tmp:
        root = Path(tmp)
        async with trio.open_nursery() as nursery:
            procs = []
            coordinator, coord_url, _ = await spawn(nursery, root / "coord", worker_config("coord", ["none"], 1), {})
            procs.append(coordinator)
            node_urls = []
            for n in (1, 2):
                proc, url, output = await spawn(nursery, root / f"node{n}", worker_config(f"node-{n}", ["default"], args.slots),
                                                {"AMP_CLUSTER_JOIN": coord_url, "AMP_LOG_LEVEL": "info"})
                procs.append(proc)
                node_urls.append(url)
                with trio.fail_after(15):
                    while b"cluster: joined" not in output:
                        await trio.sleep(0.05)
                await trio.sleep(1.5)  # the coordinator learns the new node's slots from its first pushes
                if n == 1:
                    results["direct to one node (no hop)"] = await measure(url, body, args)
                results[f"coordinator + {n} node{'s' if n > 1 else ''}"] = await measure(coord_url, body, args)
            for proc in procs:
                proc.terminate()
            nursery.cancel_scope.cancel()
    print(f"sync {args.function}, concurrency {args.concurrency}, {args.duration:.0f}s per case, "
          f"{os.cpu_count()} CPU(s), {args.slots} slots per node")
    for name, figures in results.items():
        print(f"  {name:32s} {figures['tasks_per_s']:9.1f} tasks/s  p50 {figures['p50_ms']} ms  "
              f"p99 {figures['p99_ms']} ms  errors {figures['errors']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--function", default="echo", choices=("echo", "sleep"))
    parser.add_argument("--sleep-ms", type=float, default=20.0)
    trio.run(main, parser.parse_args())
