"""Work whose thread ignores cancellation (as a slow or hung user function would): a task
function, and a dataset whose query function blocks from `AMPTEST_STUCK_FROM_BLOCK` on."""

import os
import time

import amp_runtime

STUCK_FROM_BLOCK = int(os.environ.get("AMPTEST_STUCK_FROM_BLOCK", "100"))


@amp_runtime.function(name="stuck")
def stuck_task(input: dict) -> None:
    time.sleep(600)


@amp_runtime.dataset("test/stuck", version="1.0.0", tables=["ticks"])
def stuck_dataset(table: str, first: int, last: int) -> str:
    if first >= STUCK_FROM_BLOCK:
        time.sleep(600)
    return f"SELECT range AS block_num FROM range({first}, {last} + 1)"
