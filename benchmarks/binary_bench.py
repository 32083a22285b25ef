"""The one-file binary (issue 24) beside the venv's `amp-runtime` command, in the same run:
its size, the time from exec to the "listening on" line, and /task sync echo requests/s.

The binary is dist/amp-runtime (or AMP_BENCH_BINARY), built by `./dev binary` first when
missing. Starts alternate binary and venv; the throughput runs alternate too, with the other
server stopped (SIGSTOP on its whole process tree: the bootloader and its child) while one is
measured; each figure is the median of its runs, each ratio the median of the rounds' ratios.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from .cases import READY, load, ratio

ROOT = Path(__file__).resolve().parents[1]


def binary_path() -> Path:
    path = Path(os.environ.get("AMP_BENCH_BINARY") or ROOT / "dist" / "amp-runtime")
    if not path.exists():
        subprocess.run([str(ROOT / "dev"), "binary", str(path.parent)], check=True, cwd=ROOT)
    return path


def venv_command() -> list[str]:
    return [str(Path(sys.executable).parent / "amp-runtime")]


@contextmanager
def started(command: list[str]):
    """(url, seconds from exec to the ready line, the process tree) of `command serve` on port 0."""
    with tempfile.TemporaryDirectory(prefix="amp-bench-bin-") as tmp:
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "AMP_LOG_LEVEL": "warning"}
        begun = time.perf_counter()
        proc = subprocess.Popen([*command, "serve", "--bind", "127.0.0.1:0", "--data-dir", os.path.join(tmp, "data")],
                                cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        url = None
        for line in proc.stdout:
            match = READY.search(line)
            if match:
                url = match.group(1)
                break
        took = time.perf_counter() - begun
        try:
            if url is None:
                raise RuntimeError(f"{command[0]} did not start")
            yield url, took, psutil.Process(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    return [proc, *proc.children(recursive=True)]


def _pause(proc: psutil.Process, stop: bool) -> None:
    for p in _tree(proc):
        p.suspend() if stop else p.resume()


def run(starts: int = 7, rounds: int = 10, part: float = 2.0, concurrency: int = 50) -> dict:
    binary = binary_path()
    commands = {"binary": [str(binary)], "venv": venv_command()}
    startup: dict[str, list[float]] = {"binary": [], "venv": []}
    for index in range(starts):
        for name in (["binary", "venv"] if index % 2 == 0 else ["venv", "binary"]):
            with started(commands[name]) as (_, took, _):
                startup[name].append(took)
    rates: dict[str, list[float]] = {"binary": [], "venv": []}
    with started(commands["binary"]) as (bin_url, _, bin_proc), started(commands["venv"]) as (venv_url, _, venv_proc):
        targets = {"binary": (bin_proc, bin_url), "venv": (venv_proc, venv_url)}
        for name, (proc, url) in targets.items():  # warm up, one at a time
            _pause(targets["venv" if name == "binary" else "binary"][0], True)
            _pause(proc, False)
            load(url, tasks=1000, concurrency=concurrency)
        for index in range(rounds):
            for name in (["binary", "venv"] if index % 2 == 0 else ["venv", "binary"]):
                proc, url = targets[name]
                _pause(targets["venv" if name == "binary" else "binary"][0], True)
                _pause(proc, False)
                rates[name].append(load(url, duration=part, concurrency=concurrency)["per_s"])
        _pause(bin_proc, False)
        _pause(venv_proc, False)
    bin_start, venv_start = statistics.median(startup["binary"]), statistics.median(startup["venv"])
    return {
        "size_mb": round(binary.stat().st_size / 1e6, 1),
        "startup_binary_s": round(bin_start, 3), "startup_venv_s": round(venv_start, 3),
        "startup_ratio": ratio(bin_start, venv_start),
        "task_echo_binary_per_s": round(statistics.median(rates["binary"]), 1),
        "task_echo_venv_per_s": round(statistics.median(rates["venv"]), 1),
        "task_ratio": round(statistics.median(ratio(b, v) for b, v in zip(rates["binary"], rates["venv"])), 3),
        "starts": starts, "rounds": rounds, "seconds_per_run": part,
    }
