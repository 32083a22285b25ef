"""Functions for tests that run the server as a separate process (loaded through `[functions] modules`)."""

from pathlib import Path

import trio

import amp_runtime


@amp_runtime.function(name="test_file_gate")
async def wait_for_file(input: dict) -> str:
    """Holds its slot until the file `input["gate"]` exists: a gate another process can open."""
    gate = Path(input["gate"])
    while not gate.exists():
        await trio.sleep(0.02)
    return input.get("tag", "")
