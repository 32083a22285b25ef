"""Machine readings for `workers.status_report` (psutil), in the reporting API's units.

The one sampler: the registry reports its own workers with it (on every peer of a cluster), so
one time series never mixes units. The reference API's
`workers.machine_stats` units: CPU usage in percent per core, memory in MB (MiB here), free disk
in percent of the drive, network and disk I/O in MB per second (MiB/s) since the previous sample.
GPU fields stay empty: no GPU probe here.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import psutil

from .models import MachineStats

MIB = 1024 * 1024


class IoCounters(NamedTuple):
    """Cumulative byte counters at a moment (monotonic seconds)."""

    at: float
    net_sent: float
    net_recv: float
    disk_read: float
    disk_write: float


def read_io_counters() -> IoCounters:
    net = psutil.net_io_counters()
    disk = psutil.disk_io_counters()
    return IoCounters(
        time.monotonic(),
        float(net.bytes_sent) if net else 0.0,
        float(net.bytes_recv) if net else 0.0,
        float(disk.read_bytes) if disk else 0.0,
        float(disk.write_bytes) if disk else 0.0,
    )


class IoRates(NamedTuple):
    """MiB per second for each counter of `IoCounters`."""

    net_sent: float
    net_recv: float
    disk_read: float
    disk_write: float


def io_rates_mib_s(previous: IoCounters, current: IoCounters) -> IoRates:
    """Rates between two readings; a counter that went backwards (wrapped, or a device went
    away) reads 0 rather than a negative rate."""
    elapsed = max(current.at - previous.at, 1e-6)
    return IoRates(*(max(0.0, (now - before) / elapsed / MIB) for now, before in zip(current[1:], previous[1:])))


class DiskFree(NamedTuple):
    """Free space, in percent of the drive, of the home and the temp directory (None: unknown)."""

    home: float | None
    temp: float | None


def read_disk_free() -> DiskFree:
    """Asks the filesystems (statvfs), which a hung network mount can block: run it in a thread."""
    return DiskFree(_free_percent(Path.home()), _free_percent(Path(tempfile.gettempdir())))


class MachineSampler:
    """Call `sample()` periodically, with the latest `read_disk_free()`.

    `sample()` reads /proc only (~0.25 ms of CPU, measured; those reads never wait on a device), so
    the heartbeat calls it on the event loop. In a worker thread, each of its ~25 reads handed the
    GIL back and forth with the loop: under load that cost ~2% of the requests served.

    Rates are measured since the previous call, the first one since construction. Only the
    task that owns the sampler calls it (it keeps the previous reading).
    """

    def __init__(self, read_counters: Callable[[], IoCounters] = read_io_counters) -> None:
        self._read_counters = read_counters
        self._last = read_counters()
        self._sensors = True  # False once no known CPU sensor was found (or read): none appears later
        psutil.cpu_percent(percpu=True)  # primes the per-CPU reading; the next one is a delta

    def sample(self, disk_free: DiskFree = DiskFree(None, None)) -> MachineStats:
        counters = self._read_counters()
        rates = io_rates_mib_s(self._last, counters)
        self._last = counters
        memory = psutil.virtual_memory()
        temperatures = _cpu_temperatures() if self._sensors else None
        self._sensors = temperatures is not None
        return MachineStats(
            cpu_usage=[float(v) for v in psutil.cpu_percent(percpu=True)],
            memory_used=(memory.total - memory.available) / MIB,
            memory_free=memory.available / MIB,
            network_tx=rates.net_sent,
            network_rx=rates.net_recv,
            disk_read=rates.disk_read,
            disk_write=rates.disk_write,
            disk_free_home=disk_free.home,
            disk_free_temp=disk_free.temp,
            cpu_temperature=temperatures,
        )


def _free_percent(path: Path) -> float | None:
    try:
        return 100.0 - psutil.disk_usage(str(path)).percent
    except OSError:
        return None


def _cpu_temperatures() -> list[float] | None:
    reader = getattr(psutil, "sensors_temperatures", None)
    try:
        sensors = reader() if reader else {}
    except (OSError, RuntimeError):
        return None
    for name in ("coretemp", "k10temp", "cpu_thermal", "acpitz"):
        if sensors.get(name):
            return [float(t.current) for t in sensors[name]]
    return None
