"""The `amp-runtime` command's entry point, ahead of every other import of the command.

Until the runtime watches signals, a SIGTERM (a quick restart, an orchestrator scaling down)
would end the process with its default action, exit 143, while Python imports, the config
loads and the store opens and migrates. From the first line here it is noted instead: `serve`
drains as soon as it watches (`Runtime._watch_signals`) and exits 0, as for any SIGTERM, once
its bounded start is done (a store connect gives up after 10 s); every other subcommand gets
the default action back, and a SIGTERM noted meanwhile takes effect then. Standard library only.
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


def main() -> int:
    keep_sigterm()
    from .cli import main as cli_main

    return cli_main()
