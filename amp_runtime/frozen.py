"""What the one-file binary does before the CLI runs (see packaging/amp-runtime.spec).

A PyInstaller one-file binary is two processes: the bootloader (the PID the user started)
unpacks into TMPDIR, then runs Python in a child and waits for it, forwarding signals. A kill -9
of the bootloader cannot be forwarded, so the child asks the kernel to kill it when its parent
dies (PR_SET_PDEATHSIG). Worker processes of run="process" functions are the binary itself,
started by multiprocessing's "spawn": `freeze_support` turns such a start into a worker instead
of a second CLI. Standard library only, and nothing here runs outside a frozen binary.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux; elsewhere a no-op).

    SIGKILL, not SIGTERM: the parent was killed outright, and the installed command killed
    that way ends at once too (the store recovers from its log at the next start)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    # The parent may have died before the call above took effect: then we were re-parented
    # (to init or a subreaper) and no signal will come.
    if os.getppid() != parent or not _runs_this_binary(parent):
        os._exit(1)


def _runs_this_binary(pid: int) -> bool:
    """Whether `pid` runs this binary (the bootloader)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return True  # no /proc to ask: trust the parent id check alone
    # A binary replaced on disk while running (a deploy renaming a new one into place) shows as deleted.
    return exe.endswith(" (deleted)") or os.path.realpath(exe) == os.path.realpath(sys.executable)


def _started_by_the_bootloader() -> bool:
    # The bootloader starts its child with _PYI_PARENT_PROCESS_LEVEL=0; PyInstaller's start-up
    # code in that child raises the value in os.environ (for the child's own sub-processes), so
    # the value this process was started with is read from /proc.
    try:
        with open("/proc/self/environ", "rb") as f:
            return b"_PYI_PARENT_PROCESS_LEVEL=0" in f.read().split(b"\0")
    except OSError:
        return False


def prepare() -> None:
    """Run first in every process the binary starts."""
    if not is_frozen():
        return
    # Only in the process the bootloader started. Not in the processes that one starts
    # (run="process" workers, the servers of bench --compare): a parent for PR_SET_PDEATHSIG is
    # the *thread* that started the child, and trio starts processes from its thread cache,
    # whose threads end when idle. Those end by themselves when their parent goes.
    top = _started_by_the_bootloader()
    if top:
        die_with_parent()
    from . import deferred

    deferred.start(top, die_with_parent)  # before any import needs them, in a worker process too
    import multiprocessing

    multiprocessing.freeze_support()  # a spawned worker process runs its work here and exits
