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


class DeviceReadings(NamedTuple):
    """What `MachineSampler.read_devices` asks the kernel's devices and filesystems for (None: unknown)."""

    disk_free_home: float | None  # percent of the drive
    disk_free_temp: float | None
    cpu_temperature: list[float] | None


NO_READINGS = DeviceReadings(None, None, None)


class MachineSampler:
    """Call `read_devices()` in a thread, then `sample()` with its readings, periodically.

    `sample()` reads /proc only (~0.25 ms of CPU, measured; those reads never wait on a device), so
    the heartbeat calls it on the event loop. In a worker thread, each of its ~25 reads handed the
    GIL back and forth with the loop: under load that cost ~2% of the requests served.
    `read_devices()` asks what can wait on a device: statvfs (a hung network mount blocks it) and
    the temperature sensors (an ACPI or disk sensor can take milliseconds).

    Rates are measured since the previous call, the first one since construction. Only the
    task that owns the sampler calls it (it keeps the previous reading).
    """

    def __init__(self, read_counters: Callable[[], IoCounters] = read_io_counters) -> None:
        self._read_counters = read_counters
        self._last = read_counters()
        self._sensors: bool | None = None  # False when the first look found no known CPU sensor (a VM)
        psutil.cpu_percent(percpu=True)  # primes the per-CPU reading; the next one is a delta

    def read_devices(self) -> DeviceReadings:
        temperatures = _cpu_temperatures() if self._sensors is not False else None
        if self._sensors is None:
            self._sensors = temperatures is not None
        return DeviceReadings(_free_percent(Path.home()), _free_percent(Path(tempfile.gettempdir())), temperatures)

    def sample(self, devices: DeviceReadings = NO_READINGS) -> MachineStats:
        counters = self._read_counters()
        rates = io_rates_mib_s(self._last, counters)
        self._last = counters
        memory = psutil.virtual_memory()
        return MachineStats(
            cpu_usage=[float(v) for v in psutil.cpu_percent(percpu=True)],
            memory_used=(memory.total - memory.available) / MIB,
            memory_free=memory.available / MIB,
            network_tx=rates.net_sent,
            network_rx=rates.net_recv,
            disk_read=rates.disk_read,
            disk_write=rates.disk_write,
            disk_free_home=devices.disk_free_home,
            disk_free_temp=devices.disk_free_temp,
            cpu_temperature=devices.cpu_temperature,
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
