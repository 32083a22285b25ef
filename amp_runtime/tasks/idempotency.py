"""`Idempotency-Key` for `POST /task` (IETF httpapi draft "The Idempotency-Key HTTP Header Field")
and the `idempotency_key` field of a `POST /tasks` item: one table, so the two share keys.

The same key with the same body gets the same task, never a second run: while the first request
is being admitted or its sync task runs, a duplicate waits for it and gets the same answer;
afterwards, the recorded answer (marked `Idempotent-Replayed: true`). The same key with another
body is 422 `IDEMPOTENCY_KEY_REUSED`; the body's fingerprint is a hash of the canonical request
(decoded, fields and object keys sorted), so whitespace and key order do not matter.

- A key is 1..255 printable ASCII characters, as a bare value or a structured-field string
  (`"..."`, as the draft writes it); anything else is 400 `INVALID_IDEMPOTENCY_KEY`.
- Requests refused at admission (400, 404, 429, 503) and sync requests whose client went away
  record nothing: the key can be used again.
- Sync and stream keys live in memory for `[tasks] keep_results_s` after their answer (at most
  `keep_results` of them); webhook keys are also journaled with their task, so they hold across
  restarts for as long as the task's record is kept.
- A stream cannot be shared: a duplicate while it runs is 409 `IDEMPOTENCY_KEY_IN_FLIGHT`;
  afterwards it gets the stream's final event (the items are not kept).
- Keys are per process: a keyed request is not forwarded to another node.
- `DELETE /task` with the key cancels the task admitted under it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Annotated, Any, Awaitable, Callable

import msgspec
import trio

from .errors import Rejected
from .models import TaskAccepted, TaskRequest, TaskResult

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
REPLAYED = {"Idempotent-Replayed": "true"}
_canonical = msgspec.json.Encoder(order="sorted").encode

KeyValue = Annotated[str, msgspec.Meta(
    min_length=1, max_length=MAX_KEY_LENGTH, pattern=r"^[\x20-\x7e]+$",
    description="1..255 printable ASCII characters, bare or as a structured-field string (\"...\")")]


class SubmitHeaders(msgspec.Struct, rename={"key": HEADER}):
    """Documents `POST /task`'s optional header: the same key + the same body = the same task."""

    key: Annotated[KeyValue | None, msgspec.Meta(description=(
        "The same key with the same body returns the same task (its answer, or the task while it "
        "is queued or running), never a second run; with another body: 422. Kept for "
        "[tasks] keep_results_s; for webhook tasks, journaled with the task. "
        "DELETE /task with the key cancels the task."))] = None


class CancelHeaders(msgspec.Struct, rename={"key": HEADER}):
    """Documents `DELETE /task`'s header: the key the task was submitted with."""

    key: Annotated[KeyValue, msgspec.Meta(description="The Idempotency-Key the task was submitted with")]


def parse_key(raw: str | None) -> str | None:
    """The key carried by the header, None without one; `Rejected` 400 when malformed."""
    if raw is None:
        return None
    value = raw.strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] == '"':  # sf-string: \" and \\ are the only escapes
        inner, key, escaped = value[1:-1], [], False
        for char in inner:
            if escaped:
                if char not in '"\\':
                    raise _invalid(f"{HEADER}: bad escape \\{char}")
                key.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise _invalid(f"{HEADER}: unescaped quote inside the string")
            else:
                key.append(char)
        if escaped:
            raise _invalid(f"{HEADER}: dangling backslash")
        value = "".join(key)
    return check_key(value, HEADER)


def check_key(value: str, name: str) -> str:
    """`value` if it is a valid key; `Rejected` 400 naming `name` (the header, or a batch item's
    field) otherwise."""
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise _invalid(f"{name}: must be 1 to {MAX_KEY_LENGTH} characters, got {len(value)}")
    if not all(" " <= char <= "~" for char in value):
        raise _invalid(f"{name}: only printable ASCII characters are allowed")
    return value


def _invalid(message: str) -> Rejected:
    return Rejected(400, "INVALID_IDEMPOTENCY_KEY", message)


def fingerprint(request: TaskRequest) -> str:
    """sha256 of the canonical request: what "the same body" means."""
    return hashlib.sha256(_canonical(request)).hexdigest()


class KeyEntry:
    """One key's record; changed only through `IdempotencyTable`."""

    __slots__ = ("key", "fingerprint", "mode", "task_id", "task", "answer", "settled", "released", "expires_at")

    def __init__(self, key: str, fingerprint: str, mode: str):
        self.key = key
        self.fingerprint = fingerprint
        self.mode = mode
        self.task_id: str | None = None
        self.task: Any = None  # the live Task while this process has it (a stream's replay reads it)
        self.answer: Any = None  # what `TaskService.submit` answered the first request
        self.settled = trio.Event()  # set with an answer, or when released
        self.released = False
        self.expires_at = float("inf")


class IdempotencyTable:
    """The keys this process knows. Shared by every request task, so not an actor: each method
    runs without awaiting, atomically between checkpoints (as trio's `MemoryChannelState`)."""

    def __init__(self, *, keep_s: float, max_entries: int):
        self.keep_s = keep_s
        self.max_entries = max(1, max_entries)
        self._entries: dict[str, KeyEntry] = {}
        self._settled: OrderedDict[str, KeyEntry] = OrderedDict()  # expiry order

    def claim(self, key: str, fingerprint: str, mode: str) -> tuple[KeyEntry, bool]:
        """The key's entry and whether the caller owns it (must admit the request, then `settle`
        or `release`). Raises `Rejected` 422 when the key was used for another body."""
        self._expire()
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = KeyEntry(key, fingerprint, mode)
            return entry, True
        if entry.fingerprint != fingerprint:
            raise Rejected(422, "IDEMPOTENCY_KEY_REUSED",
                           f"{HEADER} {key[:64]!r} was used for a different request body")
        return entry, False

    def bind(self, entry: KeyEntry, task: Any) -> None:
        entry.task, entry.task_id = task, task.id

    def settle(self, entry: KeyEntry, answer: Any) -> None:
        """Record the owner's answer; duplicates get it from now on, for `keep_s`."""
        entry.answer = answer
        entry.expires_at = trio.current_time() + self.keep_s
        if self._entries.get(entry.key) is entry:
            self._settled[entry.key] = entry
            self._settled.move_to_end(entry.key)
            while len(self._settled) > self.max_entries:
                self._drop(next(iter(self._settled)))
        entry.settled.set()

    def release(self, entry: KeyEntry) -> None:
        """Forget the key (nothing was admitted); waiting duplicates try again."""
        if self._entries.get(entry.key) is entry:
            self._drop(entry.key)
        entry.released = True
        entry.settled.set()

    def load(self, keys) -> None:
        """Journaled webhook keys (at start): their duplicates get the task's 202 again."""
        for record in keys:
            entry = KeyEntry(record.key, record.fingerprint, "webhook")
            entry.task_id = record.task_id
            self._entries.pop(record.key, None)
            self._settled.pop(record.key, None)
            self._entries[record.key] = entry
            self.settle(entry, TaskAccepted(id=record.task_id))

    def task_id_of(self, key: str) -> str | None:
        self._expire()
        entry = self._entries.get(key)
        return None if entry is None else entry.task_id

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        self._entries.pop(key, None)
        self._settled.pop(key, None)

    def _expire(self) -> None:
        now = trio.current_time()
        settled = self._settled
        while settled:
            entry = next(iter(settled.values()))
            if entry.expires_at > now:
                return
            self._drop(entry.key)


class Replayed(msgspec.Struct):
    """A duplicate's answer: the first request's (a `SyncOutcome` or `TaskAccepted`), or a finished
    stream's outcome (`TaskResult`: its items are not kept). Sent with `Idempotent-Replayed: true`."""

    answer: Any


async def submit_once(table: IdempotencyTable, key: str, request: TaskRequest,
                      admit: Callable[[KeyEntry], Awaitable[Any]]) -> Any:
    """Run `admit(entry)` for the first request with `key`; duplicates share its answer."""
    body_print = fingerprint(request)
    while True:
        entry, owner = table.claim(key, body_print, request.mode)
        if owner:
            return await _own(table, entry, admit)
        await entry.settled.wait()
        if not entry.released:
            return _replay(entry)
        # The first request was refused or abandoned: this one may admit it now.


async def _own(table: IdempotencyTable, entry: KeyEntry, admit) -> Any:
    try:
        answer = await admit(entry)
    except BaseException:
        table.release(entry)
        raise
    if entry.task_id is None:
        table.release(entry)  # nothing local to replay
    elif entry.mode == "stream":
        table.settle(entry, None)  # replays read the task's final outcome
    else:
        table.settle(entry, answer)
    return answer


def _replay(entry: KeyEntry) -> Replayed:
    if entry.answer is not None:
        return Replayed(entry.answer)
    task = entry.task
    if task is None or not task.outcome.done:
        raise Rejected(409, "IDEMPOTENCY_KEY_IN_FLIGHT",
                       f"the stream started with {HEADER} {entry.key[:64]!r} is still running")
    result: TaskResult = task.result_body()
    return Replayed(result)
