"""The node table's routing rules (a plain object: each call is atomic)."""

from __future__ import annotations

from amp_runtime.cluster.peers import PeerTable, WorkerInfo


def table_with_two_nodes() -> PeerTable:
    table = PeerTable()
    table.join("http://a", [WorkerInfo("a1", ["default"], 4, 2)])
    table.join("http://b", [WorkerInfo("b1", ["default", "gpu"], 4, 2)])
    return table


def push(table, url, worker, free, queued=0, maintenance=False):
    table.slots_pushed(url, worker, free, 4, queued, maintenance)


def test_a_node_gets_nothing_before_its_first_slots_push_and_after_it_lost_them():
    table = table_with_two_nodes()
    assert table.pick("default") is None
    push(table, "http://a", "a1", 4)
    assert table.pick("default").worker == "a1"
    table.slots_lost("http://a")
    assert table.pick("default") is None


def test_the_worker_with_most_room_wins_and_a_burst_spreads_between_pushes():
    table = table_with_two_nodes()
    push(table, "http://a", "a1", 4)
    push(table, "http://b", "b1", 2)  # two busy: with other work, or ours not answered yet
    picks = [table.pick("default").worker for _ in range(6)]
    assert picks == ["a1", "a1", "a1", "b1", "b1", "b1"], picks  # b1 may already be running ours
    table.done("http://a", "a1")
    assert table.pick("default").worker == "a1", "an answered forward frees its room"


def test_maintenance_full_queues_groups_exclusions_and_leaving_nodes_get_nothing():
    table = table_with_two_nodes()
    push(table, "http://a", "a1", 4, maintenance=True)
    push(table, "http://b", "b1", 0, queued=2)  # no free slot, queue (max 2) full
    assert table.pick("default") is None
    push(table, "http://b", "b1", 0, queued=1)
    assert table.pick("gpu").worker == "b1"
    push(table, "http://b", "b1", 0, queued=2)  # the pick above filled its queue
    assert table.pick("gpu") is None
    push(table, "http://a", "a1", 4)
    assert table.pick("default", frozenset({"http://a"})) is None
    assert table.pick("default", above=4) is None, "not more room than this process"
    assert table.pick("default", above=3).url == "http://a"
    assert table.node_of("b1") == "http://b"
    table.leave("http://b")
    assert table.node_of("b1") is None
    assert len(table) == 1
