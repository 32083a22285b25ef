"""The registry's records, API bodies and pure rules (id format, tag filters, stats rows)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

from ..core.ids import NODE_ID, valid_node_id  # noqa: F401  (the registry's id rule)

API_VERSION = "2.23"
VERSION_PREFIX = re.compile(r"^v2\.\d+$")

METRIC_CATEGORIES: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu_usage", "cpu_temperature"),
    "gpu": ("gpu_usage", "gpu_temperature", "gpu_memory_free", "gpu_memory_used"),
    "memory": ("memory_used", "memory_free"),
    "network": ("network_tx", "network_rx"),
    "disk": ("disk_free_home", "disk_free_temp", "disk_read", "disk_write"),
}
METRICS = tuple(m for ms in METRIC_CATEGORIES.values() for m in ms)
AGGREGATIONS = ("avg", "min", "max")


# -- the record the actor owns ------------------------------------------------------------
class WorkerInfo(msgspec.Struct):
    version: str | None = None
    commit_sha: str | None = None
    commit_timestamp: str | None = None
    build_date: str | None = None


class WorkerRecord(msgspec.Struct):
    id: str
    version: int
    created_at: datetime  # naive UTC, like the DuckDB column
    registered_at: datetime
    heartbeat_at: datetime
    last_report_at: datetime | None
    registered: bool
    timeout_s: int
    info: WorkerInfo
    ip: str | None
    tags: list[str]
    system_tags: list[str]
    queues: list[str]
    task: str | None
    queue: str | None


# -- ranges of request numbers (in the structs, so /openapi shows them) ---------------------
# A reading's bound keeps sums over millions of rows finite in DuckDB's DOUBLE aggregates.
Reading = Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]
Readings = Annotated[list[Reading], msgspec.Meta(max_length=4096, description="one per CPU / GPU")]
# Epoch seconds (milliseconds from 10^12 on, as the reference agent sends them) until year ~2286.
EpochTime = Annotated[float, msgspec.Meta(ge=0, le=1e13, description="epoch seconds or milliseconds")]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=10**9)]
WorkerTimeout = Annotated[int, msgspec.Meta(ge=1, le=31_536_000, description="seconds without a report before "
                                             "the worker expires (at most a year)")]
Interval = Annotated[int, msgspec.Meta(ge=1, le=10**9, description="bucket width in seconds")]


# -- machine stats ------------------------------------------------------------------------
class MachineStats(msgspec.Struct):
    cpu_usage: Readings | None = None
    gpu_usage: Readings | None = None
    memory_used: Reading | None = None
    memory_free: Reading | None = None
    gpu_memory_free: Readings | None = None
    gpu_memory_used: Readings | None = None
    network_tx: Reading | None = None
    network_rx: Reading | None = None
    disk_free_home: Reading | None = None
    disk_free_temp: Reading | None = None
    disk_read: Reading | None = None
    disk_write: Reading | None = None
    cpu_temperature: Readings | None = None
    gpu_temperature: Readings | None = None


SCALAR_VARIANT = "total"


def stats_rows(stats: MachineStats) -> list[tuple[str, str, float]]:
    """(metric, variant, value) per reading; arrays get variants "0", "1", ..., a scalar "total"
    (the reference server's variant for it); zeros are kept."""
    rows: list[tuple[str, str, float]] = []
    for metric in METRICS:
        value = getattr(stats, metric)
        if value is None:
            continue
        if isinstance(value, list):
            rows.extend((metric, str(i), float(v)) for i, v in enumerate(value))
        else:
            rows.append((metric, SCALAR_VARIANT, float(value)))
    return rows


def tags_match(wanted: list[str] | None, have: list[str]) -> bool:
    """Include tags OR'd, `-tag` excludes; no wanted tags matches everything."""
    if not wanted:
        return True
    include = {t for t in wanted if not t.startswith("-")}
    exclude = {t[1:] for t in wanted if t.startswith("-")}
    if include and not include.intersection(have):
        return False
    return not exclude.intersection(have)


# -- read API bodies ----------------------------------------------------------------------
class WorkerSummary(msgspec.Struct):
    node_id: str
    heartbeat_at: str


class WorkerList(msgspec.Struct):
    workers: list[WorkerSummary]


class WorkerDetail(msgspec.Struct):
    node_id: str
    created_at: str
    registered_at: str
    heartbeat_at: str
    info: WorkerInfo


# -- reporting API bodies -----------------------------------------------------------------
class RegisterRequest(msgspec.Struct):
    worker: str
    timeout: WorkerTimeout | None = None
    queues: list[str] | None = None
    tags: list[str] | None = None
    system_tags: list[str] | None = None


class StatusReportRequest(msgspec.Struct):
    worker: str
    timestamp: EpochTime
    task: str | None = None
    queue: str | None = None
    queues: list[str] | None = None
    tags: list[str] | None = None
    system_tags: list[str] | None = None
    machine_stats: MachineStats | None = None


class UnregisterRequest(msgspec.Struct):
    worker: str


class WorkersFilter(msgspec.Struct):
    last_seen: Annotated[Seconds, msgspec.Meta(description="seconds; 0 or \"none\": no filter")] | str | None = None
    tags: list[str] | None = None
    system_tags: list[str] | None = None


class MetricKeysRequest(msgspec.Struct):
    worker_ids: list[str] | None = None


class StatItem(msgspec.Struct):
    key: str
    aggregation: str | None = None
    category: str | None = None  # the reference schema's name for `aggregation`


class StatsRequest(msgspec.Struct):
    from_date: EpochTime
    to_date: EpochTime
    interval: Interval
    items: list[StatItem]
    split_by_variant: bool = False
    worker_ids: list[str] | None = None


class ActivityRequest(msgspec.Struct):
    from_date: EpochTime
    to_date: EpochTime
    interval: Interval


class IdName(msgspec.Struct):
    id: str
    name: str


class ReportedWorker(msgspec.Struct):
    """Times are RFC 3339 strings, as the original server sends them: its client parses them as
    date-times and rejects the whole answer when they are numbers."""

    id: str
    ip: str | None
    register_time: str
    last_activity_time: str
    last_report_time: str | None
    task: IdName | None
    queue: IdName | None
    queues: list[IdName]
    tags: list[str]
    system_tags: list[str]


class Empty(msgspec.Struct):
    pass


class WorkersData(msgspec.Struct):
    workers: list[ReportedWorker]


class CountData(msgspec.Struct):
    count: int


class MetricsCategory(msgspec.Struct):
    name: str
    metric_keys: list[str]


class MetricKeysData(msgspec.Struct):
    categories: list[MetricsCategory]


class AggregationValues(msgspec.Struct):
    aggregation: str
    values: list[float]


class MetricStats(msgspec.Struct, omit_defaults=True):
    metric: str
    dates: list[int]
    stats: list[AggregationValues]
    variant: str | None = None


class WorkerStats(msgspec.Struct):
    worker: str
    metrics: list[MetricStats]


class StatsData(msgspec.Struct):
    workers: list[WorkerStats]


class ActivitySeries(msgspec.Struct):
    dates: list[int]
    counts: list[int]


class ActivityData(msgspec.Struct):
    total: ActivitySeries
    active: ActivitySeries


class LoginData(msgspec.Struct):
    token: str


class LoginQuery(msgspec.Struct):
    """`expiration_sec`: the client may ask for a shorter-lived token (capped at `jwt_ttl_s`)."""

    expiration_sec: Annotated[Seconds, msgspec.Meta(description="0: the configured lifetime")] | None = None


class Endpoint(msgspec.Struct):
    name: str
    requested_version: str
    actual_version: str


class Meta(msgspec.Struct):
    id: str
    trx: str
    endpoint: Endpoint
    result_code: int
    result_subcode: int
    result_msg: str
    error_stack: str
    error_data: dict[str, Any]


class Envelope(msgspec.Struct):
    meta: Meta
    data: Any


_ENVELOPES: dict[type, type] = {}


def envelope_of(data_type: type) -> type:
    """A named envelope struct per data type (one class each), so /openapi shows each answer's shape."""
    if data_type not in _ENVELOPES:
        _ENVELOPES[data_type] = msgspec.defstruct(f"{data_type.__name__}Envelope", [("meta", Meta), ("data", data_type)])
    return _ENVELOPES[data_type]
