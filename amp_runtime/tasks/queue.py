"""The waiting line of one worker: priority order, FIFO within a priority. Pure, no trio."""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_PRIORITY = 2_097_152
# No priority sorts after every explicit one; jobs holding a slot sort before all (0).
NO_PRIORITY = MAX_PRIORITY + 1


class PriorityQueue(Generic[T]):
    """`pop` returns the lowest priority number first; equal priorities leave in arrival order.

    `remove` is O(1): the entry is marked and skipped when it reaches the front.
    """

    __slots__ = ("_heap", "_seq", "_entries")

    def __init__(self) -> None:
        self._heap: list[list] = []
        self._seq = itertools.count()
        self._entries: dict[int, list] = {}  # id(item) -> its heap entry

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def push(self, item: T, priority: int | None) -> None:
        entry = [NO_PRIORITY if priority is None else priority, next(self._seq), item]
        self._entries[id(item)] = entry
        heapq.heappush(self._heap, entry)

    def pop(self) -> T:
        while self._heap:
            _, _, item = heapq.heappop(self._heap)
            if item is not None:
                del self._entries[id(item)]
                return item
        raise IndexError("pop from an empty queue")

    def remove(self, item: T) -> bool:
        entry = self._entries.pop(id(item), None)
        if entry is None:
            return False
        entry[2] = None
        return True
