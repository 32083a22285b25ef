"""The one machine sampler reports in the reporting API's units (MB = MiB, MB/s = MiB/s)."""

import psutil

from amp_runtime.registry import service, stats
from amp_runtime.registry.stats import MIB, IoCounters, MachineSampler


def fed(*readings: IoCounters):
    """A counter reader returning `readings` in order."""
    queue = list(readings)
    return lambda: queue.pop(0)


def test_io_rates_are_mib_per_second_since_the_previous_sample():
    sampler = MachineSampler(fed(
        IoCounters(at=100.0, net_sent=0, net_recv=10 * MIB, disk_read=0, disk_write=0),
        IoCounters(at=102.0, net_sent=4 * MIB, net_recv=13 * MIB, disk_read=MIB, disk_write=8 * MIB),
        IoCounters(at=106.0, net_sent=4 * MIB, net_recv=13 * MIB, disk_read=MIB, disk_write=8 * MIB),
    ))
    first = sampler.sample()
    assert (first.network_tx, first.network_rx, first.disk_read, first.disk_write) == (2.0, 1.5, 0.5, 4.0)
    idle = sampler.sample()
    assert (idle.network_tx, idle.network_rx, idle.disk_read, idle.disk_write) == (0.0, 0.0, 0.0, 0.0)


def test_a_counter_that_goes_backwards_reads_zero():
    sampler = MachineSampler(fed(
        IoCounters(at=0.0, net_sent=50 * MIB, net_recv=0, disk_read=0, disk_write=0),
        IoCounters(at=1.0, net_sent=MIB, net_recv=MIB, disk_read=0, disk_write=0),
    ))
    reading = sampler.sample()
    assert reading.network_tx == 0.0 and reading.network_rx == 1.0


def test_memory_is_mib_and_disk_free_percent():
    sampler = MachineSampler()
    reading = sampler.sample(sampler.read_devices())
    total_mib = psutil.virtual_memory().total / MIB
    assert 0 < reading.memory_used < total_mib and 0 < reading.memory_free < total_mib
    assert 0 <= reading.disk_free_home <= 100 and 0 <= reading.disk_free_temp <= 100
    assert reading.cpu_usage and all(0 <= v <= 100 for v in reading.cpu_usage)


def test_the_registry_reports_with_the_one_sampler():
    assert service.MachineSampler is stats.MachineSampler


def test_cpu_temperatures_are_read_with_the_devices_and_not_again_where_the_first_look_found_none(monkeypatch):
    with_sensors = iter([[41.0, 43.5], None, [42.0]])  # one failed read in between: asked again
    monkeypatch.setattr(stats, "_cpu_temperatures", lambda: next(with_sensors))
    sampler = MachineSampler()
    assert [sampler.read_devices().cpu_temperature for _ in range(3)] == [[41.0, 43.5], None, [42.0]]
    reading = sampler.sample(stats.DeviceReadings(disk_free_home=12.5, disk_free_temp=50.0, cpu_temperature=[40.0]))
    assert (reading.disk_free_home, reading.disk_free_temp, reading.cpu_temperature) == (12.5, 50.0, [40.0])

    asked = []
    monkeypatch.setattr(stats, "_cpu_temperatures", lambda: asked.append(1))  # a VM: none found
    sampler = MachineSampler()
    assert [sampler.read_devices().cpu_temperature for _ in range(3)] == [None, None, None]
    assert len(asked) == 1
