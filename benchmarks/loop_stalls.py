"""What stalls the event loop under POST /task load: garbage collection, or work on the trio thread.

Runs the runtime in this process with a trio Instrument that times every task step in thread
CPU time (so a step the OS merely preempted does not count) and a gc callback that times
each collection; drives sync echo at 1 and at 50 connections from a separate process (wrk
when installed, else `amp-runtime bench`); then prints the latencies, the collections by
generation, every step that spent > 2 ms of CPU outside gc, CPU per thread (GIL holders)
and what the collector walks.

Run: python -m benchmarks.loop_stalls [--gc default|tuned] [--duration 10]
  --gc default: Python's thresholds, nothing frozen; tuned: what `amp-runtime serve` does
  ([server] gc_freeze, gc_threshold).
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import tempfile
import threading
import time

import psutil
import trio

from . import cases

STEP_CPU_S = 0.002


class StallProbe(trio.abc.Instrument):
    """Per-step CPU time outside gc, per task name; gc pauses by generation (CPU ms)."""

    def __init__(self) -> None:
        self.gc_cpu = 0.0
        self.pauses: dict[int, list[float]] = collections.defaultdict(list)
        self.long_steps: dict[str, list[float]] = collections.defaultdict(list)
        self._gc_started = 0.0
        self._step = (0.0, 0.0)

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            spent = time.thread_time() - self._gc_started
            self.gc_cpu += spent
            self.pauses[info["generation"]].append(spent * 1000)

    def before_task_step(self, task) -> None:
        self._step = (time.thread_time(), self.gc_cpu)

    def after_task_step(self, task) -> None:
        cpu0, gc0 = self._step
        own = time.thread_time() - cpu0 - (self.gc_cpu - gc0)
        if own > STEP_CPU_S:
            self.long_steps[task.name].append(round(own * 1000, 1))

    def report(self) -> str:
        lines = ["gc pauses (thread CPU ms):"]
        for generation, pauses in sorted(self.pauses.items()):
            pauses.sort()
            lines.append(f"  gen{generation}: n={len(pauses)} p50={pauses[len(pauses) // 2]:.2f} "
                         f"max={pauses[-1]:.2f} total={sum(pauses):.0f}")
        lines.append(f"steps with > {STEP_CPU_S * 1000:.0f} ms CPU outside gc:")
        for name, steps in sorted(self.long_steps.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(steps):5d}  {name[-80:]}  worst {sorted(steps, reverse=True)[:5]}")
        if not self.long_steps:
            lines.append("  none")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_stalls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gc", choices=("default", "tuned"), default="tuned")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run (default 10)")
    args = parser.parse_args(argv)

    from amp_runtime.gc_tuning import tune_gc
    from amp_runtime.config import load_config
    from amp_runtime.runtime import Runtime

    probe = StallProbe()
    with tempfile.TemporaryDirectory(prefix="amp-stalls-") as data_dir:
        config = load_config(None, environ={}, overrides={
            "server": {"bind": "127.0.0.1:0", "data_dir": data_dir}, "log": {"level": "warning"}})
        runtime = Runtime(config)
        figures: dict[int, dict] = {}

        def drive(url: str) -> None:
            cases.load(url, duration=2, concurrency=50)  # warm up
            for connections in (1, 50):
                figures[connections] = cases.load(url, duration=args.duration, concurrency=connections)
            trio.from_thread.run_sync(runtime.request_stop)

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(lambda task_status: runtime.run(task_status=task_status))
                if args.gc == "tuned":
                    tune_gc(config)
                gc.callbacks.append(probe.on_gc)
                # The load runs in other processes; this thread only waits for them.
                nursery.start_soon(trio.to_thread.run_sync, drive, urls[0])

        load_started = psutil.Process().cpu_times()
        trio.run(serve, instruments=[probe])
        gc.callbacks.remove(probe.on_gc)
        tracked = collections.Counter(type(o).__name__ for o in gc.get_objects())
    main_id = threading.main_thread().native_id
    print(f"gc {args.gc}: threshold {gc.get_threshold()}, frozen {gc.get_freeze_count()} objects; "
          f"load average {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} on {psutil.cpu_count()} CPUs")
    for connections, fig in figures.items():
        print(f"c={connections}: {fig['per_s']}/s p50 {fig['p50_ms']} ms p99 {fig.get('p99_ms')} ms "
              f"({fig.get('tool', 'amp-runtime bench')})")
    print(probe.report())
    threads = [("trio" if t.id == main_id else t.id, round(t.user_time + t.system_time, 2))
               for t in psutil.Process().threads()]
    print(f"CPU s by thread: {threads} (process total {sum(psutil.Process().cpu_times()[:2]) - sum(load_started[:2]):.1f})")
    print(f"tracked objects left: {sum(tracked.values())}; most: {tracked.most_common(8)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
