"""Machine stats for `workers.status_report`, read with psutil (field names of the reporting API).

Units: percentages for usage and free disk, MiB for memory, bytes per second for network and
disk I/O (rates since the previous reading). GPU fields are empty lists: no GPU probe here.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psutil

MIB = 1024 * 1024


class MachineStats:
    def __init__(self) -> None:
        self._last = self._counters()
        psutil.cpu_percent(percpu=True)  # primes the per-CPU reading; the first real one is a delta

    @staticmethod
    def _counters() -> tuple[float, int, int, int, int]:
        net = psutil.net_io_counters()
        disk = psutil.disk_io_counters()
        return (time.monotonic(), net.bytes_sent if net else 0, net.bytes_recv if net else 0,
                disk.read_bytes if disk else 0, disk.write_bytes if disk else 0)

    def read(self) -> dict:
        """One reading; blocking only for a few syscalls."""
        now = self._counters()
        elapsed = max(now[0] - self._last[0], 1e-3)
        tx, rx, rd, wr = ((now[i] - self._last[i]) / elapsed for i in range(1, 5))
        self._last = now
        memory = psutil.virtual_memory()
        stats = {
            "cpu_usage": psutil.cpu_percent(percpu=True),
            "gpu_usage": [],
            "memory_used": round((memory.total - memory.available) / MIB, 1),
            "memory_free": round(memory.available / MIB, 1),
            "gpu_memory_free": [],
            "gpu_memory_used": [],
            "network_tx": round(tx, 1),
            "network_rx": round(rx, 1),
            "disk_free_home": _free_percent(Path.home()),
            "disk_free_temp": _free_percent(Path(tempfile.gettempdir())),
            "disk_read": round(rd, 1),
            "disk_write": round(wr, 1),
            "cpu_temperature": _cpu_temperatures(),
            "gpu_temperature": [],
        }
        return stats


def _free_percent(path: Path) -> float:
    try:
        return round(100.0 - psutil.disk_usage(str(path)).percent, 1)
    except OSError:
        return 0.0


def _cpu_temperatures() -> list[float]:
    reader = getattr(psutil, "sensors_temperatures", None)
    try:
        sensors = reader() if reader else {}
    except (OSError, RuntimeError):
        return []
    for name in ("coretemp", "k10temp", "cpu_thermal", "acpitz"):
        if sensors.get(name):
            return [round(t.current, 1) for t in sensors[name]]
    return []
