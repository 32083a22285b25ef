"""Peers side by side: amp-runtime, Celery (prefork) and Dramatiq (processes x threads) over
Redis, on the same workloads in the same run; every peer figure is printed as a ratio.

Workloads:
  echo  50 clients each submitting an echo task and waiting for its result, for --duration s.
        amp-runtime: 50 HTTP connections, POST /task sync. Peers: 50 client threads, submit +
        wait for the result through Redis.
  batch amp-runtime only: POST /tasks from one connection, batches of 1000 echo tasks, lines
        streamed back; compared with each peer's echo figure (batch_vs_<peer>).
  cpu   4 clients, the built-in CPU burn (pure Python, ~15 ms): amp-runtime's thread slots
        (cpu_burn) and process slots (cpu_burn_process, pool = CPU count) vs Celery prefork and
        Dramatiq with the same concurrency (CPU count).

Run: python -m benchmarks.peers [--duration 8] [--json]   (needs: pip install -e '.[bench]',
and Debian's redis-server on PATH; a peer whose package or server is missing is skipped, and
the script says so). Redis is started here on 127.0.0.1, on a free port, in a temp dir, and
stopped at the end; every process started here is stopped, and the whole run is bounded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from . import cases

ROOT = Path(__file__).resolve().parent.parent
CPU_INPUT = {"n": 250_000}
ECHO_INPUT = {"x": 1}
CPU_CLIENTS = 4
ECHO_CLIENTS = 50
BATCH_SIZE = 1000  # POST /tasks items a request
STOP_TIMEOUT_S = 15


# -- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after a bound."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@contextmanager
def redis_server():
    """redis-server on 127.0.0.1:<free port>, no persistence, in a temp dir; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="amp-peers-redis-") as tmp:
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", tmp, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(proc)


@contextmanager
def peer_worker(argv: list[str], redis_url: str, env: dict | None = None):
    """A peer's worker processes (their own process group, so stopping reaches every child)."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PEERS_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    try:
        yield proc
    finally:
        stop(proc)
        log.close()


# -- client threads --------------------------------------------------------------------------
def drive_threads(call, clients: int, duration: float) -> dict:
    """`clients` threads calling `call()` back to back for `duration` s: completed calls/s."""
    done = [0] * clients
    errors = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    deadline = time.monotonic() + duration

    def client(i: int) -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                call()
            except Exception:
                errors[i] += 1
                continue
            latencies[i].append(time.perf_counter() - t0)
            done[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    elapsed = time.perf_counter() - started
    lat = sorted(x for per in latencies for x in per)
    p50 = round(lat[len(lat) // 2] * 1000, 2) if lat else None
    return {"per_s": round(sum(done) / elapsed, 1), "p50_ms": p50, "errors": sum(errors)}


def wait_ready(call, timeout: float = 60) -> None:
    """A peer's workers are up once one call comes back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- the systems -----------------------------------------------------------------------------
def ours(duration: float) -> dict:
    body = json.dumps
    with cases.server_process() as (url, _):
        cases.load(url, tasks=1000, concurrency=ECHO_CLIENTS)  # warm up
        echo = cases.load(url, duration=duration, concurrency=ECHO_CLIENTS, input=body(ECHO_INPUT))
        # Batch submission: one connection, batches of 1000, results streamed back (issue 15: >= 15x Dramatiq).
        batch = cases.load(url, batch=BATCH_SIZE, tasks=50 * BATCH_SIZE, concurrency=1, input=body(ECHO_INPUT))
        # Starts the worker processes. A count, not a time: a run cut off mid-task would kill them.
        cases.load(url, function="cpu_burn_process", tasks=40, concurrency=CPU_CLIENTS, input=body(CPU_INPUT))
        process = cases.load(url, function="cpu_burn_process", duration=duration, concurrency=CPU_CLIENTS,
                             input=body(CPU_INPUT))
        thread = cases.load(url, function="cpu_burn", duration=duration, concurrency=CPU_CLIENTS,
                            input=body(CPU_INPUT))
    return {"echo": echo, "batch": batch, "cpu_process": process, "cpu_thread": thread}


def celery(redis_url: str, duration: float, concurrency: int) -> dict:
    os.environ["PEERS_REDIS_URL"] = redis_url
    from . import peer_celery

    def echo():
        peer_celery.echo.delay(ECHO_INPUT).get(timeout=30)

    def burn():
        peer_celery.cpu_burn.delay(CPU_INPUT).get(timeout=30)

    argv = [sys.executable, "-m", "celery", "-A", "benchmarks.peer_celery", "worker", "--pool", "prefork",
            "--concurrency", str(concurrency), "--loglevel", "WARNING", "--without-gossip",
            "--without-mingle", "--without-heartbeat"]
    with peer_worker(argv, redis_url):
        wait_ready(echo)
        drive_threads(echo, ECHO_CLIENTS, min(2.0, duration))  # warm up
        result = {"echo": drive_threads(echo, ECHO_CLIENTS, duration)}
        result["cpu"] = drive_threads(burn, CPU_CLIENTS, duration)
    result["setup"] = f"prefork {concurrency}, prefetch multiplier {peer_celery.app.conf.worker_prefetch_multiplier}"
    return result


def dramatiq(redis_url: str, duration: float, concurrency: int) -> dict:
    os.environ["PEERS_REDIS_URL"] = redis_url
    from . import peer_dramatiq

    def echo():
        peer_dramatiq.echo.send(ECHO_INPUT).get_result(block=True, timeout=30_000)

    def burn():
        peer_dramatiq.cpu_burn.send(CPU_INPUT).get_result(block=True, timeout=30_000)

    threads, prefetch = 8, 200
    base = [sys.executable, "-m", "dramatiq", "benchmarks.peer_dramatiq", "--processes", str(concurrency)]
    with peer_worker([*base, "--threads", str(threads), "--queues", "echo"], redis_url,
                     env={"dramatiq_queue_prefetch": str(prefetch)}):
        wait_ready(echo)
        drive_threads(echo, ECHO_CLIENTS, min(2.0, duration))
        result = {"echo": drive_threads(echo, ECHO_CLIENTS, duration)}
    # CPU work: one thread per process, so the concurrency matches the others'.
    with peer_worker([*base, "--threads", "1", "--queues", "cpu"], redis_url):
        wait_ready(burn)
        result["cpu"] = drive_threads(burn, CPU_CLIENTS, duration)
    result["setup"] = (f"echo: {concurrency} processes x {threads} threads, prefetch {prefetch}; "
                       f"cpu: {concurrency} processes x 1 thread")
    return result


def missing(peer: str, package: str) -> str | None:
    if importlib.util.find_spec(package) is None:
        return f"package {package!r} is not installed (pip install -e '.[bench]')"
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (Debian: apt-get install redis-server)"
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(duration: float = 8.0, concurrency: int | None = None, report=print) -> dict:
    """Every figure of every system, then the ratios; skipped peers say why."""
    concurrency = concurrency or os.cpu_count() or 1
    figures: dict = {"ours": ours(duration)}
    skipped: dict[str, str] = {}
    peers = {"celery": celery, "dramatiq": dramatiq}
    wanted = {name: missing(name, name) for name in peers}
    for name, why in wanted.items():
        if why:
            skipped[name] = why
            report(f"peers: skipping {name}: {why}")
    if any(why is None for why in wanted.values()):
        with redis_server() as redis_url:
            for name, fn in peers.items():
                if wanted[name] is None:
                    report(f"peers: running {name} over {redis_url}")
                    try:
                        figures[name] = fn(redis_url, duration, concurrency)
                    except Exception as exc:  # one broken peer must not hide the others
                        skipped[name] = f"failed: {type(exc).__name__}: {exc}"
                        report(f"peers: {name} {skipped[name]}")
    ours_fig = figures["ours"]
    result = {
        "duration_s": duration, "concurrency": concurrency,
        "ours_echo_per_s": ours_fig["echo"]["per_s"],
        "ours_batch_per_s": ours_fig["batch"]["per_s"],
        "ours_cpu_process_per_s": ours_fig["cpu_process"]["per_s"],
        "ours_cpu_thread_per_s": ours_fig["cpu_thread"]["per_s"],
        "cpu_process_vs_thread": ratio(ours_fig["cpu_process"]["per_s"], ours_fig["cpu_thread"]["per_s"]),
    }
    for name in peers:
        if name not in figures:
            result[f"{name}_skipped"] = skipped.get(name, "")
            continue
        peer = figures[name]
        result[f"{name}_setup"] = peer["setup"]
        result[f"{name}_echo_per_s"] = peer["echo"]["per_s"]
        result[f"{name}_cpu_per_s"] = peer["cpu"]["per_s"]
        result[f"{name}_errors"] = peer["echo"]["errors"] + peer["cpu"]["errors"]
        result[f"echo_vs_{name}"] = ratio(ours_fig["echo"]["per_s"], peer["echo"]["per_s"])
        result[f"batch_vs_{name}"] = ratio(ours_fig["batch"]["per_s"], peer["echo"]["per_s"])
        result[f"cpu_process_vs_{name}"] = ratio(ours_fig["cpu_process"]["per_s"], peer["cpu"]["per_s"])
    return result


def render(result: dict) -> str:
    lines = [f"same run, {result['duration_s']} s per figure, peer concurrency {result['concurrency']}:",
             f"  echo, {ECHO_CLIENTS} clients: amp-runtime {result['ours_echo_per_s']}/s; "
             f"POST /tasks, batches of {BATCH_SIZE}, one connection: {result['ours_batch_per_s']} tasks/s",
             f"  cpu burn, {CPU_CLIENTS} clients: amp-runtime process slots {result['ours_cpu_process_per_s']}/s, "
             f"thread slots {result['ours_cpu_thread_per_s']}/s (process/thread {result['cpu_process_vs_thread']}x)"]
    for name in ("celery", "dramatiq"):
        if f"{name}_skipped" in result:
            lines.append(f"  {name}: skipped ({result[f'{name}_skipped']})")
            continue
        lines.append(f"  {name} ({result[f'{name}_setup']}): echo {result[f'{name}_echo_per_s']}/s "
                     f"-> amp-runtime {result[f'echo_vs_{name}']}x, batches {result[f'batch_vs_{name}']}x; cpu {result[f'{name}_cpu_per_s']}/s "
                     f"-> amp-runtime process slots {result[f'cpu_process_vs_{name}']}x"
                     + (f"; {result[f'{name}_errors']} errors" if result[f"{name}_errors"] else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per figure (default 8)")
    parser.add_argument("--concurrency", type=int, help="peer worker processes (default: the CPU count)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args.duration, args.concurrency, report=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
