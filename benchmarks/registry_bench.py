"""Registry: status reports persisted per second, and get_stats latency over a week of data.

    .venv/bin/python benchmarks/registry_bench.py [--workers 1000] [--seconds 10]
                                                  [--stats-workers 100] [--stats-days 7] [--stats-every 60]

1. Reports: an in-process runtime (real DuckDB file in a temporary directory) and `--workers`
   simulated workers, each sending one status report per second (machine stats with 8 cores
   and 9 scalar readings = 17 stats rows + 1 activity row) through `RegistryService.status_report`,
   which returns only once the report is durable. Printed: reports/s and rows/s persisted, and
   the report latency percentiles. A worker whose previous report is still in flight skips a beat
   (so reports/s below `--workers` means the coordinator is the limit).
   With `--http`, also over HTTP (`POST /workers.status_report`, 200 connections); the httpx
   client runs on the server's own thread then, so that figure is a lower bound.
2. Stats: `--stats-workers` x `--stats-days` of reports every `--stats-every` s bulk-loaded with
   SQL, then `get_stats` timed: the whole range for all workers (interval 1 h), one day for
   10 workers (interval 60 s, split by variant), and the activity report over the week.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import trio

from amp_runtime.registry.models import MachineStats, StatsRequest, StatItem, StatusReportRequest
from amp_runtime.runtime import Runtime
from tests.helpers import make_config

STATS = MachineStats(cpu_usage=[12.5, 3.0, 0.0, 50.0, 7.0, 8.0, 9.0, 10.0], memory_used=4000.0, memory_free=12000.0,
                     network_tx=0.1, network_rx=0.2, disk_free_home=40.0, disk_free_temp=40.0, disk_read=0.0,
                     disk_write=1.5)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")


async def with_runtime(data_dir: Path, body, **sections):
    runtime = Runtime(make_config(data_dir, registry={"heartbeat_s": 3600.0}, log={"level": "warning"}, **sections))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(lambda task_status: runtime.run(task_status=task_status))
        try:
            return await body(runtime, urls[0])
        finally:
            runtime.request_stop()


async def bench_reports(runtime: Runtime, url: str, workers: int, seconds: float, *, http: bool) -> dict:
    latencies: list[float] = []
    done = 0
    client = httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=200), timeout=60) if http else None
    deadline = trio.current_time() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        name = f"sim-{i:04d}"
        next_beat = trio.current_time() + (i % 100) / 100  # spread the beats over the second
        while next_beat < deadline:
            await trio.sleep_until(next_beat)
            started = time.perf_counter()
            if client is None:
                await runtime.services.registry.status_report(StatusReportRequest(worker=name, timestamp=time.time(), task=None,
                                                                         machine_stats=STATS))
            else:
                r = await client.post("/workers.status_report", json={
                    "worker": name, "timestamp": int(time.time() * 1000),
                    "machine_stats": {"cpu_usage": STATS.cpu_usage, "memory_used": 4000.0, "memory_free": 12000.0,
                                      "network_tx": 0.1, "network_rx": 0.2, "disk_free_home": 40.0,
                                      "disk_free_temp": 40.0, "disk_read": 0.0, "disk_write": 1.5}})
                r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            done += 1
            now = trio.current_time()
            next_beat += 1.0
            while next_beat < now:  # skipped beats: the previous report took longer than a second
                next_beat += 1.0

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(worker, i)
    elapsed = trio.current_time() - started
    if client is not None:
        await client.aclose()
    return {"reports_per_s": done / elapsed, "rows_per_s": done * 18 / elapsed, "p50_ms": pct(latencies, 0.5),
            "p99_ms": pct(latencies, 0.99), "reports": done}


def load_week(conn, workers: int, days: float, every: int, end: float) -> int:
    start = end - days * 86400
    conn.execute(f"""
        INSERT INTO registry_stats
        SELECT 'load-' || w, m.metric, m.variant, {start} + s * {every}, (hash(w, s, m.variant) % 10000) / 100.0
        FROM range({workers}) t(w), range({int(days * 86400 / every)}) u(s),
             (VALUES ('cpu_usage','0'),('cpu_usage','1'),('cpu_usage','2'),('cpu_usage','3'),('memory_used',''),
                     ('memory_free',''),('network_tx',''),('network_rx',''),('disk_free_home','')) m(metric, variant)""")
    conn.execute(f"""
        INSERT INTO registry_activity
        SELECT 'load-' || w, {start} + s * {every}, s % 3 = 0 FROM range({workers}) t(w), range({int(days * 86400 / every)}) u(s)""")
    return conn.execute("SELECT count(*) FROM registry_stats").fetchone()[0]


async def bench_stats(runtime: Runtime, workers: int, days: float, every: int, rounds: int = 5) -> dict:
    end = float(int(time.time()))
    rows = await runtime.store.write(load_week, workers, days, every, end)
    start = end - days * 86400
    cases = {
        f"all {workers} workers, {days:g} days, interval 3600, cpu avg+max + memory avg": StatsRequest(
            from_date=start, to_date=end, interval=3600,
            items=[StatItem("cpu_usage", "avg"), StatItem("cpu_usage", "max"), StatItem("memory_used")]),
        "10 workers, 1 day, interval 60, cpu split by variant": StatsRequest(
            from_date=end - 86400, to_date=end, interval=60, split_by_variant=True,
            items=[StatItem("cpu_usage", "avg")], worker_ids=[f"load-{i}" for i in range(10)]),
    }
    out: dict = {"rows": rows}
    for name, req in cases.items():
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            await runtime.services.registry.stats(req)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times) * 1000
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        await runtime.services.registry.activity(start, end, 3600)
        times.append(time.perf_counter() - t)
    out[f"activity report, {days:g} days, interval 3600"] = statistics.median(times) * 1000
    return out


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for http in (False, True) if args.http else (False,):
            result = await with_runtime(Path(tmp) / f"reports-{http}",
                                        lambda rt, url: bench_reports(rt, url, args.workers, args.seconds, http=http))
            label = "HTTP POST /workers.status_report" if http else "RegistryService.status_report"
            print(f"{label}: {args.workers} workers x 1 report/s for {args.seconds:g}s -> "
                  f"{result['reports_per_s']:.0f} reports/s ({result['rows_per_s']:.0f} rows/s) persisted, "
                  f"latency p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms")
        result = await with_runtime(Path(tmp) / "stats",
                                    lambda rt, url: bench_stats(rt, args.stats_workers, args.stats_days, args.stats_every))
        print(f"get_stats over {result.pop('rows'):,} stats rows "
              f"({args.stats_workers} workers x {args.stats_days:g} days, a report every {args.stats_every}s):")
        for name, ms in result.items():
            print(f"  {name}: {ms:.1f} ms (median of 5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stats-workers", type=int, default=100)
    parser.add_argument("--stats-days", type=float, default=7.0)
    parser.add_argument("--stats-every", type=int, default=60)
    parser.add_argument("--http", action="store_true",
                        help="also over HTTP (client and server share this process's one thread, so this measures both)")
    trio.run(main, parser.parse_args())
