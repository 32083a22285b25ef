"""The settled tasks a worker keeps for lookups: `GET /tasks/{id}`, the dashboard's recent tasks.

Passive state of its worker, as trio's MemoryChannelState is of a channel: every mutator is a
method here, called only by its worker's code, and none awaits. Records are kept JSON-encoded
(`task.settled_record`), within `keep_results` records and `keep_results_s` seconds."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec
import trio

from .task import Settled

_encode = msgspec.json.Encoder().encode
_settled = msgspec.json.Decoder(Settled).decode


class History:
    def __init__(self, keep_results: int, keep_results_s: float):
        self.keep_results = keep_results
        self.keep_results_s = keep_results_s
        self._records: OrderedDict[str, bytes] = OrderedDict()  # task id -> `settled_record(...)`
        self._prune_at = 0.0  # when the oldest record outlives keep_results_s

    def keep(self, task_id: str, record: bytes, finished_mono: float) -> None:
        """Add a settled record; drop what is past keep_results or keep_results_s."""
        records = self._records
        records[task_id] = record
        if len(records) > self.keep_results:
            records.popitem(last=False)
        if finished_mono < self._prune_at:
            return  # the oldest record is younger than keep_results_s: no need to look (per task)
        horizon = finished_mono - self.keep_results_s
        while records and _settled(next(iter(records.values()))).finished_mono < horizon:
            records.popitem(last=False)
        oldest = _settled(next(iter(records.values()))).finished_mono if records else 0.0
        self._prune_at = oldest + self.keep_results_s if records else 0.0

    def lookup(self, task_id: str) -> Settled | None:
        """The settled task, unless past keep_results_s (pruned when the next task settles)."""
        record = self._records.get(task_id)
        settled = _settled(record) if record else None
        if settled is not None and settled.finished_mono < trio.current_time() - self.keep_results_s:
            return None
        return settled

    def add_delivery(self, task_id: str, delivery: Any, final_status: str | None) -> None:
        """A webhook delivery attempt of a kept task, and its final status on the last one."""
        record = self._records.get(task_id)
        if record is None:
            return
        settled = _settled(record)
        settled.deliveries.append(delivery)
        if final_status is not None:
            settled.webhook_status = final_status
        self._records[task_id] = _encode(settled)

    def newest_ids(self, limit: int) -> list[str]:
        """Ids of the last `limit` settled tasks, newest first."""
        return [task_id for task_id, _ in zip(reversed(self._records), range(limit))]
