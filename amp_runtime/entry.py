"""The `amp-runtime` command's entry point, ahead of every other import of the command.

Until the runtime watches signals, a SIGTERM (a quick restart, an orchestrator scaling down)
would end the process with its default action, exit 143, while Python imports, the config
loads and the store opens and migrates. From the first line here it is noted instead
(`early_signals`): `serve` drains as soon as it watches (`Runtime._watch_signals`) and exits 0,
as for any SIGTERM, once its bounded start is done (a store connect gives up after 10 s); every
other subcommand gets the default action back, and a SIGTERM noted meanwhile takes effect then.
"""

from __future__ import annotations

from .early_signals import keep_sigterm


def main() -> int:
    keep_sigterm()
    from .cli import main as cli_main

    return cli_main()
