"""One run's file writer, trio side: a private DuckDB connection and one write at a time in a
worker thread, with a bounded answer to cancellation.

A cancelled write is abandoned at once (trio stops waiting for its thread): its `RenameGate`
is closed so the file never appears under its final name, and DuckDB is interrupted. A thread
stuck in the dataset's own Python code cannot be stopped: it is left to finish (or to die with
the process) and the log names it. The connection is then never closed under that thread; the
thread's last reference to it closes it.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import trio

from .datasets import DatasetSpec
from .extractor import RenameGate, open_private_connection, write_file

log = logging.getLogger("amp_runtime.jobs")


class JobFiles:
    """Used by one runner task only; `write` calls never overlap."""

    def __init__(self, job_id: int, root: Path, spec: DatasetSpec):
        self.job_id = job_id
        self.root = root
        self.spec = spec
        self._conn = None
        self._abandoned = False

    async def open(self) -> None:
        self._conn = await trio.to_thread.run_sync(open_private_connection)

    async def write(self, table: str, first: int, last: int) -> int:
        """Write one file; returns its size. Cancelled: the file is in place already or never
        will be (see the module docstring)."""
        gate = RenameGate()
        work = partial(write_file, self._conn, self.root, self.spec, table, first, last, gate)
        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except trio.Cancelled:
            if not gate.close():
                self._abandoned = True
                self._conn.interrupt()
                log.warning(
                    "job %d: abandoned the write of %s table %s blocks %d-%d, still running in its "
                    "thread; it will not be put in place", self.job_id, self.spec.ref, table, first, last)
            raise

    def close(self) -> None:
        """Close the connection unless an abandoned write may still be using it."""
        conn, self._conn = self._conn, None
        if conn is not None and not self._abandoned:
            conn.close()
