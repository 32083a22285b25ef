"""The node table's routing rules, through its mailbox."""

from __future__ import annotations

from functools import partial

from amp_runtime.cluster.nodes import Done, Join, Leave, NodeOf, NodeTable, Pick, SlotsLost, SlotsPushed
from amp_runtime.cluster.wire import WorkerInfo
from amp_runtime.core.actor import supervise


async def table_with_two_nodes(nursery) -> NodeTable:
    table = NodeTable()
    await nursery.start(partial(supervise, table))
    await table.ask(Join("http://a", [WorkerInfo("a1", ["default"], 4, 2)]))
    await table.ask(Join("http://b", [WorkerInfo("b1", ["default", "gpu"], 4, 2)]))
    return table


async def push(table, url, worker, free, queued=0, maintenance=False):
    await table.ask(SlotsPushed(url, worker, free, 4, queued, maintenance))


async def test_a_node_gets_nothing_before_its_first_slots_push_and_after_it_lost_them(nursery):
    table = await table_with_two_nodes(nursery)
    assert await table.ask(Pick("default")) is None
    await push(table, "http://a", "a1", 4)
    assert (await table.ask(Pick("default"))).worker == "a1"
    await table.ask(SlotsLost("http://a"))
    assert await table.ask(Pick("default")) is None


async def test_the_worker_with_most_room_wins_and_a_burst_spreads_between_pushes(nursery):
    table = await table_with_two_nodes(nursery)
    await push(table, "http://a", "a1", 4)
    await push(table, "http://b", "b1", 2)  # two busy: with other work, or ours not answered yet
    picks = [(await table.ask(Pick("default"))).worker for _ in range(6)]
    assert picks == ["a1", "a1", "a1", "b1", "b1", "b1"], picks  # b1 may already be running ours
    await table.ask(Done("http://a", "a1"))
    assert (await table.ask(Pick("default"))).worker == "a1", "an answered forward frees its room"


async def test_maintenance_full_queues_groups_exclusions_and_leaving_nodes_get_nothing(nursery):
    table = await table_with_two_nodes(nursery)
    await push(table, "http://a", "a1", 4, maintenance=True)
    await push(table, "http://b", "b1", 0, queued=2)  # no free slot, queue (max 2) full
    assert await table.ask(Pick("default")) is None
    await push(table, "http://b", "b1", 0, queued=1)
    assert (await table.ask(Pick("gpu"))).worker == "b1"
    await push(table, "http://b", "b1", 0, queued=2)  # the pick above filled its queue
    assert await table.ask(Pick("gpu")) is None
    await push(table, "http://a", "a1", 4)
    assert await table.ask(Pick("default", frozenset({"http://a"}))) is None
    assert await table.ask(Pick("default", above=4)) is None, "not more room than this process"
    assert (await table.ask(Pick("default", above=3))).url == "http://a"
    assert await table.ask(NodeOf("b1")) == "http://b"
    await table.ask(Leave("http://b"))
    assert await table.ask(NodeOf("b1")) is None
