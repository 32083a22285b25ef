"""Run the benchmark suite: `python -m benchmarks [--only CASE ...] [--sustained-s 60]`.

Every figure is measured beside its ceiling in the same run and reported as a ratio. Results go
to benchmarks/results/latest.json and benchmarks/RESULTS.md (machine, versions, command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from . import binary_bench, cases, peers

HERE = Path(__file__).parent
TARGETS = {  # issue 15's targets: case -> [(figure, ">=" or "<=", value)]
    "http_sync": [("task_vs_bare_ratio", ">=", 0.85), ("task_p99_over_p50", "<=", 3.0)],
    "latency_one_connection": [("p99_ms", "<=", 2.0)],
    "batch_one_connection": [("tasks_per_s", ">=", 30_000)],
    "inprocess_slots": [("slots_10_ratio", ">=", 0.80)],
    "stream": [("first_event_p50_ms", "<=", 5.0)],
    "sustained_rss": [("rss_growth", "<=", 0.10)],
    "jobs_progress": [("progress_updates_per_s", ">=", 50_000)],
    "jobs_progress_postgres": [("progress_updates_per_s", ">=", 20_000)],  # issue 16
    "peers": [("cpu_process_vs_thread", ">=", 1.8), ("cpu_process_vs_celery", ">=", 1.0),
              ("batch_vs_dramatiq", ">=", 15.0)],
    "binary": [("size_mb", "<=", 70), ("startup_ratio", "<=", 1.5), ("task_ratio", ">=", 0.95)],  # issue 24
}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("trio", "hypercorn", "quart", "quart-trio", "msgspec", "duckdb"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "?"
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def jobs_progress(jobs: int = 20, updates: int = 400, baseline_s: float = 5.0, store_url: str = "") -> dict:
    """Progress updates/s through the jobs progress writer (group commit) vs one transaction each,
    on a DuckDB file, or on the PostgreSQL database at `store_url`."""
    import tempfile

    import trio

    from . import jobs_progress_bench as bench

    async def measure() -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            n1, t1, tx1 = await bench.group_commit(Path(tmp) / "group.duckdb", jobs, updates, store_url)
            n2, t2, tx2 = await bench.awaited_writes(
                Path(tmp) / "each.duckdb", jobs, updates, baseline_s, store_url=store_url)
        grouped, each = n1 / t1, n2 / t2
        return {"progress_updates_per_s": round(grouped), "transactions": tx1,
                "one_transaction_per_update_per_s": round(each), "ratio": round(grouped / each, 1)}

    return trio.run(measure)


def jobs_progress_postgres() -> dict:
    """The same on a throwaway PostgreSQL server with fsync on (skipped where none is installed)."""
    from .cluster_bench import throwaway_postgres

    try:
        with throwaway_postgres(durable=True) as url:
            return jobs_progress(store_url=url)
    except SystemExit as missing:
        return {"skipped": str(missing)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--sustained-s", type=float, default=60.0, help="length of the RSS run (default 60)")
    parser.add_argument("--http-s", type=float, default=8.0, help="length of each HTTP run (default 8)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the figures only; leave RESULTS.md and results/latest.json as they are")
    args = parser.parse_args(argv)
    suite = {
        "inprocess_slots": cases.inprocess_slots,
        "priority_under_saturation": cases.priority_under_saturation,
        "http_sync": lambda: cases.http_sync(part=max(1.0, args.http_s / 4)),  # 6 rounds of 3 runs
        "latency_one_connection": lambda: cases.latency_one_connection(duration=10.0),
        "batch_one_connection": cases.batch_one_connection,
        "hotpath_cpu": cases.hotpath_cpu,
        "stream": cases.stream,
        "webhook": cases.webhook,
        "jobs_progress": jobs_progress,
        "jobs_progress_postgres": jobs_progress_postgres,
        "sustained_rss": lambda: cases.sustained_rss(duration=args.sustained_s),
        "peers": lambda: peers.run(duration=args.http_s),
        "binary": lambda: binary_bench.run(part=max(1.0, args.http_s / 4)),
    }
    results: dict = {"machine": machine(), "command": "python -m benchmarks " + " ".join(argv or sys.argv[1:]),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cases": {}}
    latest = HERE / "results" / "latest.json"
    if args.only and latest.exists():  # a partial run updates the previous full one
        previous = json.loads(latest.read_text())
        results["cases"] = previous.get("cases", {})
        results["command"] = f"{previous.get('command', '')}; then {results['command']}"
    for name, run in suite.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            results["cases"][name] = run()
        except Exception as exc:  # one broken case must not hide the others' figures
            results["cases"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        results["cases"][name]["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(results["cases"][name]), flush=True)
    if args.no_write:
        return 0
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.json").write_text(json.dumps(results, indent=2))
    (HERE / "RESULTS.md").write_text(render(results))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


def render(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results", "",
        f"Measured {results['date']} with `{results['command'].strip()}` on {m['cpus']} CPUs ({m['cpu']}), "
        f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
        "| case | figure | value | target | met |", "|---|---|---|---|---|",
    ]
    for case, figures in results["cases"].items():
        target = TARGETS.get(case)
        for key, value in figures.items():
            if key == "seconds":
                continue
            mark, met = "", ""
            for figure, op, bound in target or []:
                if key == figure and isinstance(value, (int, float)):
                    mark = f"{op} {bound}"
                    met = "yes" if (value >= bound if op == ">=" else value <= bound) else "**no**"
            lines.append(f"| {case} | {key} | {value} | {mark} | {met} |")
    notes = HERE / "profile_notes.md"
    if notes.exists():  # where the time goes, from profiles: kept by hand, next to the figures
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
