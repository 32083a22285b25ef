"""Real machine readings for the runtime's own workers (psutil), in the reporting API's units.

Memory in MiB, disk free in percent, network and disk I/O in MiB/s since the previous sample.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psutil

from .models import MachineStats

MIB = 1024 * 1024


class MachineSampler:
    """Call `sample()` periodically; rates are measured between consecutive calls."""

    def __init__(self) -> None:
        self._last: tuple[float, float, float, float, float] | None = None
        psutil.cpu_percent(percpu=True)  # the first call only primes the counters

    def sample(self) -> MachineStats:
        now = time.monotonic()
        net = psutil.net_io_counters()
        disk = psutil.disk_io_counters()
        counters = (
            now,
            float(net.bytes_sent) if net else 0.0,
            float(net.bytes_recv) if net else 0.0,
            float(disk.read_bytes) if disk else 0.0,
            float(disk.write_bytes) if disk else 0.0,
        )
        rates = [0.0, 0.0, 0.0, 0.0]
        if self._last is not None:
            elapsed = max(now - self._last[0], 1e-6)
            rates = [max(0.0, (c - p) / elapsed / MIB) for c, p in zip(counters[1:], self._last[1:])]
        self._last = counters
        memory = psutil.virtual_memory()
        return MachineStats(
            cpu_usage=[float(v) for v in psutil.cpu_percent(percpu=True)],
            memory_used=(memory.total - memory.available) / MIB,
            memory_free=memory.available / MIB,
            network_tx=rates[0],
            network_rx=rates[1],
            disk_read=rates[2],
            disk_write=rates[3],
            disk_free_home=_free_percent(Path.home()),
            disk_free_temp=_free_percent(Path(tempfile.gettempdir())),
        )


def _free_percent(path: Path) -> float | None:
    try:
        return 100.0 - psutil.disk_usage(str(path)).percent
    except OSError:
        return None
