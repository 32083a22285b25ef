"""`amp-runtime bench`: measure task throughput and latency against a URL or an in-process server."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import msgspec
import trio

from .load import LoadResult, run_load
from .report import BenchSummary, summarize, table

WARM_UP = 200  # requests before each measured run of --compare
DEFAULT_INPUTS = {
    "echo": {"x": 1},
    "hello": {"name": "bench"},
    "count": {"n": 10},
    "sleep": {"ms": 10},
}


def add_bench_parser(commands) -> None:
    bench = commands.add_parser(
        "bench", help="measure task throughput and latency",
        description="Send tasks as fast as --concurrency connections allow and report tasks/s and "
        "latency percentiles. Without --url a server is started in this process.",
    )
    bench.add_argument("--url", help="target a running server (default: start one in-process)")
    bench.add_argument("--key", default="", help="API key for --url")
    bench.add_argument("--function", default="echo", help="function to call (default echo)")
    bench.add_argument("--input", help="JSON input for the function (default per function)")
    bench.add_argument("--mode", choices=("sync", "stream", "webhook"), default="sync")
    bench.add_argument("--slots", type=int, default=10, help="slots of the in-process worker (default 10)")
    bench.add_argument("--concurrency", type=int, default=50, help="connections (default 50)")
    amount = bench.add_mutually_exclusive_group()
    amount.add_argument("--tasks", type=int, help="number of tasks (default 5000)")
    amount.add_argument("--duration", type=float, help="seconds to run instead of a task count")
    bench.add_argument("--path", default="/task",
                       help="path to POST to (default /task; /noop measures the HTTP ceiling of the same app)")
    bench.add_argument("--compare", action="store_true",
                       help="also measure the ceilings in the same run (this server's Quart-Trio no-op route "
                       "POST /noop, and a bare hypercorn-trio ASGI app doing the same msgspec decode/encode) "
                       "and print the figure as a ratio of each; servers it starts run in their own processes")
    bench.add_argument("--rounds", type=int, default=1,
                       help="with --compare: measure the three in turn this many times and keep each one's "
                       "median run (steadier ratios on a busy machine; default 1)")
    bench.add_argument("--batch", type=int, metavar="N",
                       help="send the tasks N at a time through POST /tasks (batches with streamed results); "
                       "tasks/s counts the successful lines, latencies are per batch")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")


def bench_command(args: argparse.Namespace) -> int:
    if args.tasks is None and args.duration is None:
        args.tasks = 5000
    try:
        task_input = json.loads(args.input) if args.input else DEFAULT_INPUTS.get(args.function, {})
    except json.JSONDecodeError as exc:
        print(f"amp-runtime bench: --input is not JSON: {exc}", file=sys.stderr)
        return 2
    if args.compare:
        return _compare_command(args, task_input)
    summary = trio.run(_bench, args, task_input)
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        print(table([summary]))
    return 0 if summary.ok else 1


async def _bench(args: argparse.Namespace, task_input) -> BenchSummary:
    if args.url:
        return await _drive(args, args.url.rstrip("/"), task_input, args.key)
    from ..gc_tuning import tune_gc
    from ..config import load_config
    from ..runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="amp-bench-") as data_dir:
        config = load_config(None, environ={}, overrides={
            "server": {"bind": "127.0.0.1:0", "data_dir": data_dir},
            "workers": [{"id": "bench-01", "slots": args.slots, "max_queue": 100_000}],
            "webhook": {"allow_private": True},
            "log": {"level": "warning"},
        })
        runtime = Runtime(config)
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(lambda task_status: runtime.run(task_status=task_status))
            tune_gc(config)  # the server measured as `amp-runtime serve` runs it
            summary = await _drive(args, urls[0], task_input, "")
            runtime.request_stop()
        return summary


def _compare_command(args: argparse.Namespace, task_input) -> int:
    from .compare import ratio_lines

    comparison = trio.run(_compare, args, task_input)
    if args.json:
        print(msgspec.json.encode(comparison).decode())
    else:
        print(table([comparison.task, comparison.noop, comparison.bare]))
        print()
        print(ratio_lines(comparison))
    return 0 if comparison.task.ok and comparison.noop.ok and comparison.bare.ok else 1


async def _compare(args: argparse.Namespace, task_input):
    """The figure and its two ceilings, each warmed up and driven the same way, `--rounds` times."""
    from contextlib import AsyncExitStack

    from .compare import bare_process, compare, runtime_process

    async def measure(url: str, path: str, mode: str, key: str, name: str) -> BenchSummary:
        run = argparse.Namespace(**{**vars(args), "path": path, "mode": mode, "json": True})
        await _drive(argparse.Namespace(**{**vars(run), "tasks": WARM_UP, "duration": None}), url, task_input, key)
        summary = await _drive(run, url, task_input, key)
        summary.name = name
        return summary

    async with AsyncExitStack() as stack:
        url, key = args.url, args.key
        if not url:
            url, key = await stack.enter_async_context(runtime_process(args.slots)), ""
        url = url.rstrip("/")
        bare_url = await stack.enter_async_context(bare_process())
        runs: dict[str, list[BenchSummary]] = {"task": [], "noop": [], "bare": []}
        for _ in range(max(1, args.rounds)):  # interleaved, so a change of load hits all three
            runs["task"].append(await measure(url, args.path, args.mode, key, f"{args.function} POST {args.path}"))
            runs["noop"].append(await measure(url, "/noop", "sync", key, "Quart-Trio POST /noop"))
            runs["bare"].append(await measure(bare_url, "/", "sync", "", "bare hypercorn-trio ASGI"))
    task, noop, bare = (sorted(r, key=lambda s: s.per_s)[len(r) // 2] for r in runs.values())
    return compare(task, noop, bare)


async def _drive(args, url: str, task_input, key: str) -> BenchSummary:
    headers = {"Authorization": key} if key else {}
    body: dict = {"function": args.function, "input": task_input, "contract": 1, "mode": args.mode}
    progress = _progress_line if sys.stderr.isatty() and not args.json else None
    if getattr(args, "batch", None):
        return await _drive_batch(args, url, body, headers, progress)
    if args.mode != "webhook":
        result = await run_load(url, args.path, msgspec.json.encode(body), headers=headers,
                                concurrency=args.concurrency, total=args.tasks,
                                duration_s=args.duration, progress=progress)
        if progress:
            print(file=sys.stderr)
        return summarize(f"{args.function} @ {url}", args.mode, result)
    async with trio.open_nursery() as nursery:
        receiver = await nursery.start(_webhook_receiver)
        body["webhook"] = {"url": receiver.url}
        started = time.perf_counter()
        result = await run_load(url, "/task", msgspec.json.encode(body), headers=headers,
                                concurrency=args.concurrency, total=args.tasks,
                                duration_s=args.duration, progress=progress)
        with trio.move_on_after(60):
            while receiver.count < result.ok:
                await receiver.more.wait()
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    summary = summarize(f"{args.function} webhook @ {url}", "webhook", result)
    summary.events_per_s = round(receiver.count / elapsed, 1)  # completed deliveries/s
    return summary


async def _drive_batch(args, url: str, body: dict, headers: dict, progress) -> BenchSummary:
    """`--batch N`: each request is one `POST /tasks` of N copies of the task; a task counts
    as done when its line says `"success":true`."""
    size = args.batch
    batches = None if args.tasks is None else max(1, -(-args.tasks // size))
    result = await run_load(url, "/tasks", msgspec.json.encode([body] * size), headers=headers,
                            concurrency=args.concurrency, total=batches, duration_s=args.duration,
                            progress=progress, count_in_body=b'"success":true')
    if progress:
        print(file=sys.stderr)
    summary = summarize(f"{args.function} batch {size} @ {url}", "batch", result)
    summary.ok = result.events
    summary.per_s = round(result.events / result.elapsed_s, 1) if result.elapsed_s else 0.0
    summary.events_per_s = None
    summary.ok_batches = result.ok
    return summary


def _progress_line(result: LoadResult, elapsed: float) -> None:
    done = len(result.latencies_s)
    rate = done / elapsed if elapsed else 0.0
    print(f"\r  {done:>9} done  {rate:>9.1f} tasks/s  errors {result.errors}", end="", file=sys.stderr, flush=True)


class _Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.url = ""
        self.more = trio.Event()


async def _webhook_receiver(task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A minimal keep-alive HTTP server that answers 200 and counts deliveries."""
    from .load import _Conn

    receiver = _Receiver()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hook"

    async def handle(stream: trio.SocketStream) -> None:
        conn = _Conn(stream)
        try:
            while True:
                head = await conn.read_until(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await conn.read_exactly(length)
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                receiver.count += 1
                receiver.more.set()
                receiver.more = trio.Event()
        except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    task_status.started(receiver)
    await trio.serve_listeners(handle, listeners)
