"""What the store's mailbox carries (reads, writes, appends) and what its group commit counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(slots=True)
class Read:
    fn: Callable[..., Any]
    args: tuple
    sent: bool = False  # handed to the DB thread: a write can no longer be withdrawn


@dataclass(slots=True)
class Write:
    fn: Callable[..., Any]
    args: tuple
    sent: bool = False


@dataclass(slots=True)
class Append:
    """One row for `table`: the rows of a group commit go in as one column-wise insert."""

    table: str
    columns: tuple[str, ...]
    row: tuple
    sent: bool = False


@dataclass
class StoreStats:
    """What the group commit has done so far (read by /metrics and benchmarks)."""

    transactions: int = 0
    writes: int = 0
    last_batch_size: int = 0
    last_commit_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class ConnectionLost(Exception):
    """Raised on the DB thread when a statement failed because the connection broke."""


class Closing(Exception):
    """The process is stopping while the store waits for its database (see `stop_waiting`)."""
