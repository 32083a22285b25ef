"""Time in the API's formats: RFC 3339 UTC with microseconds and `Z`, or epoch seconds."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """`2025-01-15T17:20:15.456789Z`; naive datetimes are taken as UTC (DuckDB TIMESTAMP)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def naive_utc(moment: datetime) -> datetime:
    """For DuckDB TIMESTAMP columns, which hold naive UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment
