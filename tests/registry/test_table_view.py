"""The shared registry's read side (PostgreSQL): concurrent readers share reads, and a reader
never takes a read that started before it asked (it could miss a change committed since)."""

from datetime import datetime

import pytest
import trio

from amp_runtime.registry.models import WorkerInfo, WorkerRecord
from amp_runtime.registry.shared import TableView

AT = datetime(2026, 12, 1, 12, 0, 0)


def record(task: str) -> WorkerRecord:
    return WorkerRecord(id="w", version=1, created_at=AT, registered_at=AT, heartbeat_at=AT, last_report_at=None,
                        registered=True, timeout_s=60, info=WorkerInfo(), ip=None, tags=[], system_tags=[],
                        queues=[], task=task, queue=None)


class SlowStore:
    """Each read takes a second and answers with the number of reads started so far."""

    def __init__(self, fail_first: bool = False):
        self.reads = 0
        self.fail_first = fail_first

    async def read(self, fn):
        self.reads += 1
        number = self.reads
        await trio.sleep(1)
        if self.fail_first and number == 1:
            raise RuntimeError("store down")
        return [record(f"read-{number}")], AT  # the records and the database's clock


async def test_readers_arriving_during_a_read_share_the_next_one(autojump_clock):
    store = SlowStore()
    view = TableView(store)
    seen: list[str] = []

    async def reader():
        seen.append((await view.records())["w"].task)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.5)  # the first read is in flight
        for _ in range(20):
            nursery.start_soon(reader)
    assert store.reads == 2
    assert seen == ["read-1"] + ["read-2"] * 20


async def test_a_failed_read_fails_its_reader_and_the_others_read_again(autojump_clock):
    store = SlowStore(fail_first=True)
    view = TableView(store)
    outcomes: list[str] = []

    async def reader():
        try:
            outcomes.append((await view.records())["w"].task)
        except RuntimeError as exc:
            outcomes.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.5)
        nursery.start_soon(reader)
    assert outcomes == ["store down", "read-2"]


async def test_a_reader_alone_reads_at_once(autojump_clock):
    view = TableView(SlowStore())
    started = trio.current_time()
    assert (await view.records())["w"].task == "read-1"
    assert (await view.records())["w"].task == "read-2"  # nothing is cached between calls
    assert trio.current_time() - started == pytest.approx(2.0)
