"""A job's file write either puts a complete file in place (and says so) or leaves nothing,
even when its thread outlives the run that asked for it."""

from __future__ import annotations

import logging
import threading

import pytest
import trio

from amp_runtime.jobs.datasets import DatasetSpec
from amp_runtime.jobs.extractor import RenameGate, WriteAbandoned, file_path, write_file
from amp_runtime.jobs.files import JobFiles


def gated_spec(release: threading.Event, entered: threading.Event) -> DatasetSpec:
    def query(table: str, first: int, last: int) -> str:
        entered.set()
        release.wait(30)  # a dataset function that ignores cancellation
        return f"SELECT range AS block_num FROM range({first}, {last} + 1)"

    return DatasetSpec("test", "gated", "1.0.0", ("ticks",), query)


def everything(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def run_in_thread(fn) -> dict:
    """Run `fn` on a plain thread we can join (not trio's), so the test sees its end."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    outcome["thread"] = thread
    return outcome


@pytest.mark.parametrize("closed_first", [True, False])
async def test_a_write_renames_into_place_only_while_its_gate_is_open(tmp_path, closed_first):
    import duckdb

    release, entered = threading.Event(), threading.Event()
    spec = gated_spec(release, entered)
    gate = RenameGate()
    conn = duckdb.connect()
    outcome = await run_in_thread(lambda: write_file(conn, tmp_path, spec, "ticks", 0, 9, gate))
    await trio.to_thread.run_sync(entered.wait, 10)
    if closed_first:
        assert gate.close() is False  # the run is cancelled while the thread is still busy
    release.set()
    await trio.to_thread.run_sync(outcome["thread"].join, 30)
    conn.close()
    if closed_first:
        assert isinstance(outcome.get("error"), WriteAbandoned)
        assert everything(tmp_path) == []  # neither the file nor its temporary
    else:
        assert outcome["value"] == file_path(tmp_path, spec, "ticks", 0, 9).stat().st_size
        assert gate.close() is True
        assert everything(tmp_path) == ["test/gated/1.0.0/ticks/0-9.parquet"]


async def test_a_cancelled_write_returns_at_once_and_the_log_names_it(tmp_path, caplog):
    release, entered = threading.Event(), threading.Event()
    files = JobFiles(7, tmp_path, gated_spec(release, entered))
    await files.open()
    caplog.set_level(logging.WARNING, logger="amp_runtime.jobs")
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(files.write, "ticks", 20, 39)
                await trio.to_thread.run_sync(entered.wait, 10)
                cancelled_at = trio.current_time()
                scope.cancel()
        assert scope.cancelled_caught
        assert trio.current_time() - cancelled_at < 1, "the stuck thread held the run"
        assert "job 7: abandoned the write of test/gated@1.0.0 table ticks blocks 20-39" in caplog.text
    finally:
        files.close()
        release.set()
