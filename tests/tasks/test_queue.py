from amp_runtime.tasks.queue import PriorityQueue


def test_priority_then_fifo_then_unprioritised_last():
    q = PriorityQueue()
    for name, prio in [("a", None), ("b", 5), ("c", 1), ("d", 5), ("e", None), ("f", 1)]:
        q.push(name, prio)
    assert [q.pop() for _ in range(len(q))] == ["c", "f", "b", "d", "a", "e"]


def test_remove_skips_the_entry_and_len_follows():
    q = PriorityQueue()
    items = [object() for _ in range(3)]
    for item in items:
        q.push(item, 1)
    assert q.remove(items[1]) and not q.remove(items[1])
    assert len(q) == 2
    assert [q.pop(), q.pop()] == [items[0], items[2]]
    assert not q


def test_slot_holds_go_before_every_task():
    q = PriorityQueue()
    q.push("task", 1)
    q.push("job", 0)
    assert q.pop() == "job"
