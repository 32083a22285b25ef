"""Soak: hold mixed traffic against one server for a set time and report figures and memory.

    python -m benchmarks.soak [--duration 60] [--sync-conns 4] [--stream-conns 2]
                              [--webhook-rate 50] [--progress-rate 20] [--keep-results 1000] [--json]

Loopback only and bounded: the server is a subprocess on 127.0.0.1:0 with a temporary data dir
(removed afterwards), the webhook receiver listens on 127.0.0.1:0, and everything stops after
`--duration` seconds (plus a short drain of webhook deliveries). Traffic, all at once:

- sync:     POST /task echo, as fast as `--sync-conns` keep-alive connections go (the paced
            kinds below share the machine with them: more connections mean higher latencies there);
- stream:   POST /task count (5 events) in stream mode over `--stream-conns` connections;
- webhook:  POST /task echo in webhook mode at `--webhook-rate`/s, delivered to the receiver;
- progress: a continuous job writing Parquet, its progress polled at `--progress-rate`/s.

Latency of the paced kinds includes waiting for a free client connection when the server falls
behind. Reported: per kind requests, throughput, p50/p99 latency and errors (transport errors and
unexpected statuses); webhooks accepted vs delivered; the server's RSS at start and end (and
its peak), sampled every second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx
import msgspec
import psutil
import trio

from amp_runtime.bench.load import run_load

from .cases import server_process


WARMUP_SAMPLES = 10  # RSS samples (one a second) before memory is expected to be flat


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# hypercorn closes a keep-alive connection after this many requests (its keep_alive_max_requests);
# run_load does not read `Connection: close` and counts the next send on it as a transport error.
RECYCLE_EVERY = 1000


def summary(latencies_s: list[float], statuses: dict[int, int], errors: int, elapsed_s: float, ok: set[int],
            *, recycles: bool = False) -> dict:
    requests = sum(statuses.values())
    bad = sum(n for status, n in statuses.items() if status not in ok)
    recycled = min(errors, requests // RECYCLE_EVERY + 1) if recycles else 0
    errors -= recycled
    return {
        "requests": requests,
        "per_s": round(requests / elapsed_s, 1) if elapsed_s else 0.0,
        "p50_ms": round(percentile(latencies_s, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies_s, 0.99) * 1000, 2),
        "errors": errors + bad,
        "connection_recycles": recycled,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


class Paced:
    """A request kind sent at a fixed rate (one at a time per tick, not a firehose)."""

    def __init__(self) -> None:
        self.latencies_s: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0

    async def run(self, client: httpx.AsyncClient, method: str, path: str, body: dict | None,
                  rate: float, until: float) -> None:
        interval = 1.0 / rate
        next_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            while trio.current_time() < until:
                nursery.start_soon(self._one, client, method, path, body)
                next_at += interval
                await trio.sleep_until(next_at)

    async def _one(self, client: httpx.AsyncClient, method: str, path: str, body: dict | None) -> None:
        t0 = time.perf_counter()
        try:
            response = await client.request(method, path, json=body)
        except httpx.HTTPError:
            self.errors += 1
            return
        self.latencies_s.append(time.perf_counter() - t0)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1


class WebhookReceiver:
    """A minimal HTTP/1.1 endpoint on 127.0.0.1 that answers 200 and counts deliveries."""

    def __init__(self) -> None:
        self.delivered = 0
        self.url = ""

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[length:]
                self.delivered += 1
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
            return


async def sample_rss(process: psutil.Process, samples: list[int], until: float) -> None:
    while trio.current_time() < until:
        samples.append(process.memory_info().rss)
        await trio.sleep(1.0)


async def soak(url: str, process: psutil.Process, args: argparse.Namespace) -> dict:
    receiver = WebhookReceiver()
    rss: list[int] = [process.memory_info().rss]
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=50)) as client, trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        job = (await client.post("/jobs", json={"dataset": "example/blocks@1.0.0", "start_block": 0,
                                                "end_block": None})).json()
        started = trio.current_time()
        until = started + args.duration
        webhook, progress = Paced(), Paced()
        results: dict = {}

        async def blast(kind: str, body: dict, conns: int) -> None:
            results[kind] = await run_load(url, "/task", msgspec.json.encode(body), concurrency=conns,
                                           duration_s=args.duration)

        async with trio.open_nursery() as traffic:
            traffic.start_soon(sample_rss, process, rss, until)
            traffic.start_soon(blast, "sync", {"function": "echo", "input": {"x": 1}, "contract": 1}, args.sync_conns)
            traffic.start_soon(blast, "stream", {"function": "count", "input": {"n": 5}, "contract": 1,
                                                 "mode": "stream"}, args.stream_conns)
            traffic.start_soon(webhook.run, client, "POST", "/task",
                               {"function": "echo", "input": {"x": 1}, "contract": 1, "mode": "webhook",
                                "webhook": {"url": receiver.url}}, args.webhook_rate, until)
            traffic.start_soon(progress.run, client, "GET", f"/jobs/{job['id']}/progress", None,
                               args.progress_rate, until)
        elapsed = trio.current_time() - started
        rss.append(process.memory_info().rss)

        final = (await client.get(f"/jobs/{job['id']}/progress")).json()
        await client.put(f"/jobs/{job['id']}/stop")
        accepted = webhook.statuses.get(202, 0)
        with trio.move_on_after(15):  # deliveries still queued when the traffic stopped
            while receiver.delivered < accepted:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()

    kinds = {
        "sync": summary(results["sync"].latencies_s, results["sync"].statuses, results["sync"].errors,
                        results["sync"].elapsed_s, {200}, recycles=True),
        "stream": summary(results["stream"].latencies_s, results["stream"].statuses, results["stream"].errors,
                          results["stream"].elapsed_s, {200}, recycles=True),
        "webhook": summary(webhook.latencies_s, webhook.statuses, webhook.errors, elapsed, {202}),
        "progress": summary(progress.latencies_s, progress.statuses, progress.errors, elapsed, {200}),
    }
    kinds["stream"]["events"] = results["stream"].events
    kinds["webhook"]["delivered"] = receiver.delivered
    blocks = max((t["current_block"] for t in final.get("tables", {}).values()), default=0)
    total = sum(k["requests"] for k in kinds.values())
    return {
        "duration_s": round(elapsed, 1),
        "requests": total,
        "per_s": round(total / elapsed, 1),
        "errors": sum(k["errors"] for k in kinds.values()),
        "kinds": kinds,
        "job_blocks_written": blocks,
        "rss_start_mb": round(rss[0] / 2**20, 1),
        "rss_end_mb": round(rss[-1] / 2**20, 1),
        "rss_peak_mb": round(max(rss) / 2**20, 1),
        "rss_growth": round((rss[-1] - rss[0]) / rss[0], 3),
        # After the first seconds (caches, pools, the job's first files): what a flat server keeps.
        "rss_warm_mb": round(rss[min(WARMUP_SAMPLES, len(rss) - 1)] / 2**20, 1),
        "rss_growth_after_warmup": round((rss[-1] - rss[min(WARMUP_SAMPLES, len(rss) - 1)])
                                         / rss[min(WARMUP_SAMPLES, len(rss) - 1)], 3),
    }


def print_report(report: dict) -> None:
    print(f"soak {report['duration_s']} s: {report['requests']} requests, {report['per_s']}/s, "
          f"{report['errors']} errors")
    for kind, k in report["kinds"].items():
        extra = "".join(f", {name} {k[name]}" for name in ("events", "delivered", "connection_recycles")
                        if k.get(name))
        print(f"  {kind:<9} {k['requests']:>8} req  {k['per_s']:>8}/s  p50 {k['p50_ms']:>7} ms  "
              f"p99 {k['p99_ms']:>7} ms  errors {k['errors']}{extra}  statuses {k['statuses']}")
    print(f"  job: {report['job_blocks_written']} blocks written")
    print(f"  server RSS: start {report['rss_start_mb']} MiB, end {report['rss_end_mb']} MiB, "
          f"peak {report['rss_peak_mb']} MiB, growth {report['rss_growth'] * 100:.1f}%; "
          f"after {WARMUP_SAMPLES} s warm-up {report['rss_warm_mb']} MiB -> end "
          f"({report['rss_growth_after_warmup'] * 100:.1f}%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    parser.add_argument("--sync-conns", type=int, default=4)
    parser.add_argument("--stream-conns", type=int, default=2)
    parser.add_argument("--keep-results", type=int, default=1000,
                        help="[tasks] keep_results: small, so the bound is reached early and RSS must flatten")
    parser.add_argument("--webhook-rate", type=float, default=50.0, help="webhook tasks per second")
    parser.add_argument("--progress-rate", type=float, default=20.0, help="job progress reads per second")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)
    env = {"AMP_JOBS_BATCH_BLOCKS": "100", "AMP_JOBS_CONTINUOUS_BLOCKS_PER_S": "2000",
           "AMP_TASKS_KEEP_RESULTS": str(args.keep_results)}
    with server_process(env=env) as (url, process):
        report = trio.run(soak, url, process, args)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
