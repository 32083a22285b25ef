"""Turning a dataset into Parquet files: the batch grid and the file writer.

Layout (fixed, tools read it), under the output root (`[jobs] output_dir`, default
`<data-dir>/datasets`, shared by the nodes of one machine):
    <root>/<namespace>/<name>/<version>/<table>/<first_block>-<last_block>.parquet

Each file is written to a temporary name in the same directory and then `os.replace`d, so a
file under its final name is always complete. A `RenameGate` decides whether the rename may
still happen: once a cancelled run closed it, a write left running in its thread renames
nothing (its temporary is deleted). Files are aligned on a grid of `batch_blocks`
starting at the job's `start_block`, so a resumed job rewrites exactly the same names.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb

from .datasets import DatasetSpec


def dataset_dir(root: Path, spec: DatasetSpec) -> Path:
    return root / spec.namespace / spec.name / spec.version


def file_path(root: Path, spec: DatasetSpec, table: str, first: int, last: int) -> Path:
    return dataset_dir(root, spec) / table / f"{first}-{last}.parquet"


def batches(start_block: int, end_block: int | None, batch_blocks: int) -> Iterator[tuple[int, int]]:
    """The inclusive `(first, last)` ranges of the grid; endless when `end_block` is None."""
    for first in itertools.count(start_block, batch_blocks):
        if end_block is not None and first > end_block:
            return
        last = first + batch_blocks - 1
        yield first, last if end_block is None else min(last, end_block)


_FILE_NAME = re.compile(r"^(\d+)-(\d+)\.parquet$")


@dataclass(frozen=True, slots=True)
class Overlap:
    """A file already in place that a new job's file would overlap: a glob would count the
    blocks of both twice."""

    table: str
    first: int
    last: int
    own_first: int  # the new job's file over it
    own_last: int


def overlapping_file(root: Path, spec: DatasetSpec, start_block: int, end_block: int | None,
                     batch_blocks: int) -> Overlap | None:
    """The first file under `root` that the grid of a job over `[start_block, end_block]` would
    overlap without being that same file (the same name is rewritten identically); None if
    there is none. Blocking: it lists the tables' directories."""
    directory = dataset_dir(root, spec)
    for table in spec.tables:
        try:
            names = os.listdir(directory / table)
        except FileNotFoundError:
            continue
        for name in names:
            match = _FILE_NAME.match(name)
            if match is None:
                continue
            first, last = int(match[1]), int(match[2])
            if last < start_block or (end_block is not None and first > end_block):
                continue
            own_first = start_block + (max(first, start_block) - start_block) // batch_blocks * batch_blocks
            own_last = own_first + batch_blocks - 1 if end_block is None else min(own_first + batch_blocks - 1, end_block)
            if (own_first, own_last) != (first, last):
                return Overlap(table, first, last, own_first, own_last)
    return None


def open_private_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory connection for one job's bulk work (never the store actor's connection).

    One thread keeps row order, and so file bytes, the same on every run.
    """
    conn = duckdb.connect()
    conn.execute("SET threads = 1")
    return conn


class WriteAbandoned(Exception):
    """The run that asked for this file was cancelled: the file was not put in place."""


class RenameGate:
    """Whether one file write may still rename its temporary into place.

    Shared by the writing thread and the trio task that awaits it, so guarded by a lock (held
    only around one rename): after `close()` returned, no rename happens any more.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = True
        self.renamed = False

    def rename(self, temp: Path, final: Path) -> None:
        """Thread side: put the finished file in place, or raise `WriteAbandoned`."""
        with self._lock:
            if not self._open:
                raise WriteAbandoned(str(final))
            os.replace(temp, final)
            self.renamed = True

    def close(self) -> bool:
        """Trio side, once the run is cancelled; returns whether the file is in place already."""
        with self._lock:
            self._open = False
            return self.renamed


def write_file(
    conn: duckdb.DuckDBPyConnection, root: Path, spec: DatasetSpec, table: str, first: int, last: int,
    gate: RenameGate | None = None,
) -> int:
    """Write one table's file for `[first, last]`; returns its size in bytes. Blocking: run it
    in a worker thread. The dataset's own exceptions propagate (the job fails with them).
    With a closed `gate` it leaves nothing behind and raises `WriteAbandoned`."""
    final = file_path(root, spec, table, first, last)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        query = spec.query(table, first, last)
        conn.execute(f"COPY ({query}) TO '{_sql_path(temp)}' (FORMAT parquet)")
        if gate is None:
            os.replace(temp, final)
        else:
            gate.rename(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return final.stat().st_size


def remove_temp_files(root: Path, spec: DatasetSpec) -> int:
    """Delete temporaries a killed process left behind; returns how many."""
    removed = 0
    directory = dataset_dir(root, spec)
    for table in spec.tables:
        for temp in (directory / table).glob(".*.tmp"):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
