"""The node channel's messages: one WebSocket per node, opened by the node to the coordinator.

The node says `Hello` first (its URL and workers), then beats. The coordinator assigns jobs
(`Assign`) and asks them to stop, pause or go (`StopJob`, `PauseJob`, `CancelJob`); a paused
run ends with `Released`. A job running on a node
talks to the coordinator's scheduler through `Ask` (its `Started`/`Stopping`/`Finished`),
`Progress`, `Flush` and `ReadProgress`; each of those except `Progress` gets one `Answer`
(or `ProgressRows`), in order, for the same `(job_id, attempt)`. A draining node pauses its
jobs, then says `Leaving`: the coordinator moves them at once (answering `Left`).
"""

from __future__ import annotations

from typing import Union

import msgspec

from ..jobs.messages import Finished, Started, Stopping
from ..jobs.store import JobRecord, ProgressRow


class WorkerInfo(msgspec.Struct):
    """A node's worker as the coordinator routes to it."""

    id: str
    groups: list[str]
    slots: int
    max_queue: int


# -- node -> coordinator -------------------------------------------------------------------
class Hello(msgspec.Struct, tag=True):
    url: str  # where the coordinator reaches this node (`[cluster] advertise_url`)
    workers: list[WorkerInfo]


class Beat(msgspec.Struct, tag=True):
    pass


class Ask(msgspec.Struct, tag=True):
    job_id: int
    attempt: int
    msg: Union[Started, Stopping, Finished]


class Progress(msgspec.Struct, tag=True):
    row: ProgressRow


class Flush(msgspec.Struct, tag=True):
    job_id: int
    attempt: int


class ReadProgress(msgspec.Struct, tag=True):
    job_id: int
    attempt: int


class Released(msgspec.Struct, tag=True):
    """A paused run ended at a batch boundary with its progress flushed, without an outcome."""

    job_id: int
    attempt: int


class Leaving(msgspec.Struct, tag=True):
    """The node drains: its jobs are paused with their progress flushed; move them now."""


# -- coordinator -> node -------------------------------------------------------------------
class Welcome(msgspec.Struct, tag=True):
    heartbeat_s: float


class Assign(msgspec.Struct, tag=True):
    record: JobRecord
    attempt: int


class StopJob(msgspec.Struct, tag=True):
    job_id: int
    attempt: int


class CancelJob(msgspec.Struct, tag=True):
    job_id: int
    attempt: int


class PauseJob(msgspec.Struct, tag=True):
    """The coordinator drains: end the run at the next batch boundary and say `Released`."""

    job_id: int
    attempt: int


class Answer(msgspec.Struct, tag=True):
    job_id: int
    attempt: int
    value: bool | None = None


class ProgressRows(msgspec.Struct, tag=True):
    job_id: int
    attempt: int
    rows: list[ProgressRow]


class Left(msgspec.Struct, tag=True):
    """The coordinator heard `Leaving`: no job is assigned to this node any more."""


FromNode = Union[Hello, Beat, Ask, Progress, Flush, ReadProgress, Released, Leaving]
ToNode = Union[Welcome, Assign, StopJob, PauseJob, CancelJob, Answer, ProgressRows, Left]

encode = msgspec.json.Encoder().encode
decode_from_node = msgspec.json.Decoder(FromNode).decode
decode_to_node = msgspec.json.Decoder(ToNode).decode


def leaf(exc: BaseException) -> BaseException:
    """The first plain exception inside (nested) exception groups, so a connection lost by
    a reader and a writer at once is handled as one; `exc` itself if it is no group."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
