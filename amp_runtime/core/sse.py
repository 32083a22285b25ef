"""Server-sent events: one event's bytes, the one place their framing is written."""

from __future__ import annotations


def sse_event(data: bytes, event: bytes | None = None) -> bytes:
    """`data` is one line of JSON (the encoder writes no newline inside), so one `data:` field."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event + b"\ndata: " + data + b"\n\n"
