"""Functions for the process-slot tests. They run in worker processes, which import this
module by name: keep them at the top level."""

import os
import signal
import time
from pathlib import Path

import amp_runtime


@amp_runtime.function(name="test_proc_square", run="process")
def square(input: dict) -> dict:
    return {"value": input["x"] * input["x"], "pid": os.getpid()}


@amp_runtime.function(name="test_proc_raise", run="process")
def raise_value_error(input: dict) -> None:
    raise ValueError(f"bad input {input.get('x')}")


def _spin(input: dict) -> None:
    """Write this process's pid where the test looks for it, then burn CPU forever."""
    Path(input["pid_file"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + 120  # a bound, should the kill never come
    while time.monotonic() < deadline:
        pass


amp_runtime.function(name="test_proc_spin", run="process")(_spin)
amp_runtime.function(name="test_proc_spin_short", run="process", timeout_s=1.0)(_spin)


@amp_runtime.function(name="test_proc_exit", run="process")
def exit_now(input: dict) -> None:
    os._exit(int(input.get("code", 3)))


@amp_runtime.function(name="test_proc_segfault", run="process")
def segfault(input: dict) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
