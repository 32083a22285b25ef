"""One function per figure; each returns a dict with the figure, its ceiling and their ratio."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import msgspec
import psutil
import trio

READY = re.compile(r"listening on (http://\S+)")


# -- processes -------------------------------------------------------------------------------
@contextmanager
def server_process(*, module: str = "amp_runtime", env: dict | None = None, slots: int = 10):
    """A server in its own process on 127.0.0.1:0; yields (url, psutil.Process)."""
    data = tempfile.mkdtemp(prefix="amp-bench-")
    args = [sys.executable, "-m", module]
    if module == "amp_runtime":
        args += ["serve", "--bind", "127.0.0.1:0", "--data-dir", data]
    full_env = {**os.environ, "AMP_LOG_LEVEL": "warning", "AMP_WEBHOOK_ALLOW_PRIVATE": "true", **(env or {})}
    if module == "amp_runtime" and slots != 10:
        config = os.path.join(data, "bench.toml")
        with open(config, "w") as f:
            f.write(f'[[workers]]\nid = "bench-01"\nslots = {slots}\nmax_queue = 100000\n')
        args += ["--config", config]
    # Its own session, as the peers' workers have in peers.py: with the kernel's autogroup
    # scheduling each session gets one fair share of a busy machine.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True,
                            start_new_session=True)
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = READY.search(line)
        if match:
            url = match.group(1)
    if url is None:
        proc.kill()
        raise RuntimeError(f"{module} did not start")
    try:
        yield url, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def load(url: str, *, path: str = "/task", function: str = "echo", mode: str = "sync",
         concurrency: int = 50, tasks: int | None = None, duration: float | None = None,
         input: str | None = None, batch: int | None = None) -> dict:
    """Load from a separate process: wrk when installed (sync POSTs), else our own generator.
    `batch`: POST /tasks with that many tasks a request (`per_s` then counts tasks)."""
    body = {"function": function, "input": msgspec.json.decode(input) if input else {"x": 1},
            "contract": 1, "mode": mode}
    if shutil.which("wrk") and mode == "sync" and duration and not batch:  # wrk runs for a time, not a count
        return _wrk(url, path, msgspec.json.encode(body).decode(), concurrency, duration)
    args = [sys.executable, "-m", "amp_runtime", "bench", "--url", url, "--path", path, "--json",
            "--function", function, "--mode", mode, "--concurrency", str(concurrency)]
    if batch:
        args += ["--batch", str(batch)]
    args += ["--duration", str(duration)] if duration else ["--tasks", str(tasks or 5000)]
    if input:
        args += ["--input", input]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    return msgspec.json.decode(out.stdout.strip().splitlines()[-1])


def _wrk(url: str, path: str, body: str, concurrency: int, duration: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        # A Lua long string: the JSON body's quotes need no escaping.
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                     f"wrk.body = [==[{body}]==]\n")
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency",
                              "-s", script.name, url + path], capture_output=True, text=True, timeout=600).stdout
    finally:
        os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    if errors:  # failed requests are not throughput
        total = int(re.search(r"(\d+) requests in", out).group(1))
        rate *= max(0, total - errors) / total if total else 0
    return {"per_s": round(rate, 1), "p50_ms": _ms(re.search(r"50%\s+([\d.]+)(\w+)", out)),
            "p99_ms": _ms(re.search(r"99%\s+([\d.]+)(\w+)", out)), "tool": "wrk", "errors": errors}


def _ms(match) -> float | None:
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}.get(unit, 1.0)


def ratio(value: float, ceiling: float) -> float:
    return round(value / ceiling, 3) if ceiling else 0.0


# -- in-process ------------------------------------------------------------------------------
def inprocess_slots(round_trips: int = 50_000) -> dict:
    """Submit -> slot -> result through a worker actor (echo) vs a raw channel request/reply."""
    return trio.run(_inprocess_slots, round_trips)


async def _inprocess_slots(round_trips: int) -> dict:
    from amp_runtime.config import WorkerConfig
    from amp_runtime.core.actor import Reply, supervise
    from amp_runtime.tasks import builtin  # noqa: F401
    from amp_runtime.tasks.registry import FUNCTIONS
    from amp_runtime.tasks.worker import Task, WorkerActor, run_sync

    producers = 10
    per_producer = round_trips // producers

    # The ceiling: 10 producers, one consumer, replies through an Event slot.
    send, recv = trio.open_memory_channel(1024)

    async def consumer():
        async for msg, reply in recv:
            reply.set(msg)

    async def raw_producer():
        for i in range(per_producer):
            reply = Reply()
            await send.send((i, reply))
            await reply.wait()

    # Wall-clock rates, and thread CPU per round trip beside them: on a shared machine the
    # CPU figures (one thread does all of it) move far less than the wall-clock ones.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        started, started_cpu = time.perf_counter(), time.thread_time()
        async with trio.open_nursery() as inner:
            for _ in range(producers):
                inner.start_soon(raw_producer)
        raw_rate = per_producer * producers / (time.perf_counter() - started)
        raw_cpu = (time.thread_time() - started_cpu) / (per_producer * producers)
        nursery.cancel_scope.cancel()

    results = {"raw_channel_round_trips_per_s": round(raw_rate), "raw_channel_us_cpu": round(raw_cpu * 1e6, 2)}
    ids = itertools.count()
    # `echo` has no await point, so it runs in one step without a cancel scope (registry.may_suspend);
    # `sleep` with ms=0 awaits once, as the raw round trip does: the cost of a task that may suspend.
    sleep_zero = msgspec.convert({"ms": 0}, FUNCTIONS["sleep"].input_type)
    for label, spec, slots in [("slots", FUNCTIONS["echo"], 1), ("slots", FUNCTIONS["echo"], 10),
                               ("slots", FUNCTIONS["echo"], 100), ("awaiting", FUNCTIONS["sleep"], 10)]:
        worker = WorkerActor(WorkerConfig(id="w", slots=slots, max_queue=100_000),
                             keep_results=1000, keep_results_s=60, expose_tracebacks=False)

        async def slot_producer():
            for i in range(per_producer):
                task = Task(f"t{next(ids)}", spec, sleep_zero if label == "awaiting" else i, priority=None,
                            mode="sync", timeout_s=60)
                # A sync task admitted, leased and released: the path POST /task takes for a function
                # that may suspend. It runs `echo` on a free slot through `run_now`, cheaper still.
                await run_sync(worker, task)

        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, worker)
            started, started_cpu = time.perf_counter(), time.thread_time()
            async with trio.open_nursery() as inner:
                for _ in range(producers):
                    inner.start_soon(slot_producer)
            rate = per_producer * producers / (time.perf_counter() - started)
            cpu = (time.thread_time() - started_cpu) / (per_producer * producers)
            nursery.cancel_scope.cancel()
        results[f"{label}_{slots}_tasks_per_s"] = round(rate)
        results[f"{label}_{slots}_ratio"] = ratio(rate, raw_rate)
        results[f"{label}_{slots}_us_cpu"] = round(cpu * 1e6, 2)
        results[f"{label}_{slots}_cpu_ratio"] = ratio(raw_cpu, cpu)
    return results


def priority_under_saturation(slots: int = 10, filler: int = 400, urgent: int = 50) -> dict:
    """Time in queue of priority-1 tasks while the slots are full of priority-10 work."""
    return trio.run(_priority, slots, filler, urgent)


async def _priority(slots: int, filler: int, urgent: int) -> dict:
    from amp_runtime.config import WorkerConfig
    from amp_runtime.core.actor import supervise
    from amp_runtime.tasks import builtin  # noqa: F401
    from amp_runtime.tasks.registry import FUNCTIONS
    from amp_runtime.tasks.worker import Task, WorkerActor

    worker = WorkerActor(WorkerConfig(id="w", slots=slots, max_queue=100_000),
                         keep_results=10_000, keep_results_s=600, expose_tracebacks=False)
    waits: dict[int, list[float]] = {1: [], 10: []}

    async def submit(priority: int, ms: int):
        spec = FUNCTIONS["sleep"]
        task = Task(f"p{priority}-{time.perf_counter_ns()}", spec, spec.input_type(ms=ms),
                    priority=priority, mode="sync", timeout_s=600)
        submitted = time.perf_counter()
        worker.admit(task)
        await task.outcome.wait()
        waits[priority].append(time.perf_counter() - submitted - task.duration_ms / 1000)

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, worker)
        async with trio.open_nursery() as inner:
            for _ in range(filler):
                inner.start_soon(submit, 10, 20)
            await trio.sleep(0.1)
            for _ in range(urgent):
                inner.start_soon(submit, 1, 1)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    p1 = sorted(waits[1])
    p10 = sorted(waits[10])
    return {
        "priority_1_queue_ms_p50": round(p1[len(p1) // 2] * 1000, 2),
        "priority_1_queue_ms_max": round(p1[-1] * 1000, 2),
        "priority_10_queue_ms_p50": round(p10[len(p10) // 2] * 1000, 2),
        "slot_task_ms": 20,
    }


# -- over HTTP -------------------------------------------------------------------------------
def http_sync(part: float = 2.0, concurrency: int = 50, rounds: int = 6) -> dict:
    """POST /task sync echo vs the no-op route of the same server vs bare hypercorn.

    Both servers run at once and take turns: `rounds` rounds of noop, task and bare, each run
    `part` s long (whole seconds with wrk), while the other server is stopped (SIGSTOP: it takes
    no CPU while the other one is measured). Each round starts with the next of the three, so
    none is always the first run after a switch of servers; each is warmed up alike first.
    Each ratio is the median of the rounds' own ratios, so a machine that speeds up or slows
    down during the run moves both sides of a ratio alike; the rates are the medians of the
    rounds."""
    import statistics

    with server_process() as (url, ours), server_process(module="benchmarks.bare_asgi") as (bare_url, bare_proc):
        targets = {"noop": (ours, url, "/noop"), "task": (ours, url, "/task"), "bare": (bare_proc, bare_url, "/")}
        names = list(targets)
        for proc, target_url, path in targets.values():  # warm up, one server at a time
            (bare_proc if proc is ours else ours).suspend()
            proc.resume()
            load(target_url, path=path, tasks=1000, concurrency=concurrency)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for round_index in range(rounds):
            for name in names[round_index % 3:] + names[:round_index % 3]:
                proc, target_url, path = targets[name]
                (bare_proc if proc is ours else ours).suspend()
                proc.resume()
                runs[name].append(load(target_url, path=path, duration=part, concurrency=concurrency))
        ours.resume()
        bare_proc.resume()

    def median(name: str, key: str = "per_s") -> float:
        return round(statistics.median(run[key] or 0.0 for run in runs[name]), 3)

    def median_ratio(name: str, ceiling: str) -> float:
        return round(statistics.median(ratio(a["per_s"], b["per_s"]) for a, b in zip(runs[name], runs[ceiling])), 3)

    task_p50, task_p99 = median("task", "p50_ms"), median("task", "p99_ms")
    return {
        "rounds": rounds, "seconds_per_run": part,
        "task_sync_echo_per_s": median("task"), "task_p50_ms": task_p50, "task_p99_ms": task_p99,
        "task_p99_over_p50": ratio(task_p99, task_p50),
        "noop_route_per_s": median("noop"), "bare_hypercorn_per_s": median("bare"),
        "task_vs_noop_ratio": median_ratio("task", "noop"),
        "task_vs_bare_ratio": median_ratio("task", "bare"),
        "task_vs_bare_each_round": [ratio(a["per_s"], b["per_s"]) for a, b in zip(runs["task"], runs["bare"])],
        "loader_drives_noop_at_least": median("noop"),
        "errors": sum(run.get("errors", 0) for run in runs["task"]),
        "load_tool": runs["task"][0].get("tool", "amp-runtime bench (separate process)"),
    }


def latency_one_connection(duration: float = 10.0) -> dict:
    """POST /task sync echo from one connection for `duration` s: the tail a lone client sees,
    beside the bare hypercorn-trio app's under the same load (the stack's own tail is the
    ceiling: on the 2-core machine its p99 at c=1 was itself 3-4.5 ms)."""
    with server_process() as (url, _):
        load(url, tasks=1000, concurrency=1)  # warm up
        one = load(url, duration=duration, concurrency=1)
    with server_process(module="benchmarks.bare_asgi") as (url, _):
        load(url, path="/", tasks=1000, concurrency=1)
        bare = load(url, path="/", duration=duration, concurrency=1)
    return {"duration_s": duration, "per_s": one["per_s"], "p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"],
            "bare_p50_ms": bare["p50_ms"], "bare_p99_ms": bare["p99_ms"],
            "p99_vs_bare_p99": ratio(one["p99_ms"] or 0.0, bare["p99_ms"] or 0.0),
            "load_tool": one.get("tool", "amp-runtime bench (separate process)")}


def batch_one_connection(size: int = 1000, tasks: int = 50_000) -> dict:
    """POST /tasks, batches of `size` sync echo tasks, one connection; lines counted as they stream."""
    with server_process() as (url, _):
        load(url, batch=size, tasks=5 * size, concurrency=1)  # warm up
        run = load(url, batch=size, tasks=tasks, concurrency=1)
    return {"batch": size, "tasks": run["ok"], "tasks_per_s": run["per_s"], "batch_p50_ms": run["p50_ms"],
            "errors": run["errors"]}


def hotpath_cpu(requests: int = 20_000, concurrency: int = 50) -> dict:
    """CPU per request of the app alone (the ASGI callable hypercorn calls, driven in-process
    with no sockets) for POST /task sync echo, POST /noop and the bare ASGI app: what our layer
    costs over the floor, measured in thread CPU time so a busy machine moves it little."""
    import gc

    threshold = gc.get_threshold()
    try:
        return trio.run(_hotpath_cpu, requests, concurrency)
    finally:  # the next cases of the suite run with this process's own settings again
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def _hotpath_cpu(requests: int, concurrency: int) -> dict:
    import gc

    from amp_runtime.bench import bare_asgi
    from amp_runtime.config import load_config
    from amp_runtime.runtime import Runtime

    body = b'{"function":"echo","input":{"x":1},"contract":1,"mode":"sync"}'

    async def drive(app, path: str) -> float:
        scope = {"type": "http", "method": "POST", "path": path,
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

        async def client() -> None:
            for _ in range(requests // concurrency):
                messages = [{"type": "http.request", "body": body, "more_body": False}]

                async def receive() -> dict:
                    if messages:
                        return messages.pop()
                    await trio.sleep_forever()  # the client never leaves

                async def send(message: dict) -> None:
                    await trio.lowlevel.checkpoint()  # a socket write is a checkpoint too

                await app(scope, receive, send)

        started = time.thread_time()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(client)
        return (time.thread_time() - started) / requests * 1e6

    with tempfile.TemporaryDirectory(prefix="amp-bench-") as data_dir:
        config = load_config(None, environ={}, overrides={
            "server": {"bind": "127.0.0.1:0", "data_dir": data_dir}, "log": {"level": "warning"}})
        runtime = Runtime(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: runtime.run(task_status=task_status))
            gc.collect()
            gc.freeze()
            gc.set_threshold(*config.server.gc_threshold)
            app = runtime.in_flight  # what hypercorn calls: the Quart-Trio app behind the hot path
            await drive(app, "/task")  # warm up
            task, noop, bare = await drive(app, "/task"), await drive(app, "/noop"), await drive(bare_asgi.app, "/")
            runtime.request_stop()
    return {"task_us_cpu_per_request": round(task, 1), "noop_us_cpu_per_request": round(noop, 1),
            "bare_us_cpu_per_request": round(bare, 1), "task_minus_bare_us": round(task - bare, 1)}


def stream(events: int = 20_000) -> dict:
    """Time to first event on an idle server, and events/s on one stream."""
    with server_process() as (url, _):
        first = load(url, function="count", mode="stream", concurrency=1, tasks=200, input='{"n": 1}')
        one = load(url, function="count", mode="stream", concurrency=1, tasks=1,
                   input=f'{{"n": {events}}}')
    return {"first_event_p50_ms": first["first_event_p50_ms"], "events_per_s_one_stream": one["events_per_s"]}


def webhook(tasks: int = 3000) -> dict:
    """Completed webhook deliveries/s to a local receiver."""
    with server_process() as (url, _):
        result = load(url, function="echo", mode="webhook", tasks=tasks, concurrency=50)
    return {"deliveries_per_s": result["events_per_s"], "accepted_per_s": result["per_s"]}


def sustained_rss(duration: float = 60.0) -> dict:
    """Server RSS before and after a sustained sync load."""
    with server_process() as (url, proc):
        # Past [tasks] keep_results (10,000), so the bounded result history is full before the
        # baseline: what grows after that would be a leak.
        load(url, tasks=12_000)
        before = proc.memory_info().rss
        result = load(url, duration=duration, concurrency=50)
        after = proc.memory_info().rss
    return {"duration_s": duration, "tasks_per_s": result["per_s"], "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1), "rss_growth": ratio(after - before, before)}
