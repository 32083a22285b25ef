"""Sync tasks per second through a peer that forwards every task to the other peers (PostgreSQL).

    .venv/bin/python benchmarks/cluster_bench.py [--duration 5] [--concurrency 64] [--function echo]
                                                 [--store-url postgresql://...]

Starts a throwaway PostgreSQL server (initdb + pg_ctl in a temp dir, as the tests do; or uses
`--store-url`, whose database it leaves with a `peers` table and the other tables of a store),
then, as separate processes on loopback ports and one store: an entry peer whose only worker
serves no built-in function (so every task is forwarded), then 1 other peer, then 2 (each one
worker, `--slots` slots), and drives `POST /task` (sync) on the entry peer with
`amp_runtime.bench.load` for `--duration` seconds per case. Also measured: the same load
straight to one peer (no hop), the ceiling forwarding is compared with. Everything runs on this
machine, so the load generator, the store and the peers share its cores: with few cores, adding
a peer adds capacity only when the function waits (`--function sleep`) rather than computes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import trio

from amp_runtime.bench.load import run_load

READY = re.compile(rb"listening on (http://\S+)")
KEY = "bench-cluster-key"


@contextmanager
def throwaway_postgres(durable: bool = False):
    """A PostgreSQL server in a temp dir for the run; yields its URL. Commits skip the disk
    (fsync off) unless `durable`: a figure about persisting must pay for the flush."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    bin_dir = Path(found[-1]).parent if found else (Path(shutil.which("initdb")).parent if shutil.which("initdb") else None)
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (no initdb); install it or pass --store-url")
    root = Path(tempfile.mkdtemp(prefix="amp-bench-pg-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = root / "data"
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
            f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={root} -p {port}"
            + ("" if durable else " -c fsync=off -c synchronous_commit=off"), "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


async def spawn(nursery: trio.Nursery, data_dir: Path, config: str, env: dict[str, str]) -> tuple[trio.Process, str, bytearray]:
    data_dir.mkdir(parents=True)
    (data_dir / "config.toml").write_text(config)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "amp_runtime", "serve", "--bind", "127.0.0.1:0", "--data-dir", str(data_dir),
         "--config", str(data_dir / "config.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "AMP_CLUSTER_KEY": KEY, "AMP_LOG_LEVEL": "info", **env})
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
            "p50_ms": pick(0.50), "p99_ms": pick(0.99), "statuses": dict(result.statuses)}


async def main(args) -> None:
    body = json.dumps({"function": args.function, "contract": 1,
                       "input": {"ms": args.sleep_ms} if args.function == "sleep" else {"i": 1}}).encode()
    if args.store_url:
        results = await run_cases(args, body, args.store_url)
    else:
        with throwaway_postgres() as url:
            results = await run_cases(args, body, url)
    print(f"sync {args.function}, concurrency {args.concurrency}, {args.duration:.0f}s per case, "
          f"{os.cpu_count()} CPU(s), {args.slots} slots per peer, PostgreSQL store")
    for name, figures in results.items():
        print(f"  {name:36s} {figures['tasks_per_s']:9.1f} tasks/s  p50 {figures['p50_ms']} ms  "
              f"p99 {figures['p99_ms']} ms  errors {figures['errors']}"
              + (f" (statuses {figures['statuses']})" if figures['errors'] else ""))


async def run_cases(args, body: bytes, store_url: str) -> dict:
    results = {}
    env = {"AMP_STORE_URL": store_url}
    with tempfile.TemporaryDirectory(prefix="amp-cluster-bench-") as tmp:
        root = Path(tmp)
        async with trio.open_nursery() as nursery:
            procs = []
            entry, entry_url, entry_output = await spawn(nursery, root / "entry", worker_config("entry", ["none"], 1), env)
            procs.append(entry)
            for n in (1, 2):
                proc, url, _ = await spawn(nursery, root / f"peer{n}", worker_config(f"peer-{n}", ["default"], args.slots),
                                           env)
                procs.append(proc)
                with trio.fail_after(15):  # the entry peer reads the directory and the new peer's slots
                    while f"routing to peer {url} ".encode() not in entry_output:
                        await trio.sleep(0.05)
                if n == 1:
                    results["direct to one peer (no hop)"] = await measure(url, body, args)
                results[f"through a peer, {n} other peer{'s' if n > 1 else ''}"] = await measure(entry_url, body, args)
            for proc in procs:
                proc.terminate()
            nursery.cancel_scope.cancel()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--function", default="echo", choices=("echo", "sleep"))
    parser.add_argument("--sleep-ms", type=float, default=20.0)
    parser.add_argument("--store-url", default="", help="an existing PostgreSQL database (default: a throwaway server)")
    trio.run(main, parser.parse_args())
