"""SIGTERM before the runtime watches signals: noted, not fatal (see `entry.py`).

A leaf module (standard library only, nothing of the package), so the entry point, the CLI and
the runtime can all reach the one flag without importing one another.
"""

from __future__ import annotations

import os
import signal
import threading

noted = threading.Event()  # a SIGTERM came before anything watched for it


def _note(signum: int, frame: object) -> None:
    noted.set()


def keep_sigterm() -> None:
    try:
        signal.signal(signal.SIGTERM, _note)
    except ValueError:  # not the main thread (an embedding): signals are not ours to take
        pass


def default_sigterm() -> None:
    """For a subcommand that does not serve: SIGTERM ends it again, a noted one now."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        return
    if noted.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
