"""A function that says when it started, so a test can tell a burst that ran at once from one
that queued (start times, not wall-clock speed)."""

import time
from typing import Annotated

import msgspec
import trio

import amp_runtime


class TimedInput(msgspec.Struct, kw_only=True):
    ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 0


@amp_runtime.function(name="timed_sleep")
async def timed_sleep(input: TimedInput) -> dict:
    started = time.time()
    await trio.sleep(input.ms / 1000.0)
    return {"started": started}
