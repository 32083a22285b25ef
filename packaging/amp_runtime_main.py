"""The one-file binary's entry point (packaging/amp-runtime.spec): the same CLI as the
installed `amp-runtime` command, after the frozen-process setup in amp_runtime.frozen."""

import runpy
import sys

from amp_runtime.frozen import prepare

prepare()  # first: a worker process started by multiprocessing never reaches the CLI

# `BINARY -m amp_runtime[.x] ARGS` runs that module as `python -m` would: `sys.executable` is
# the binary, and the code that starts servers of its own (bench --compare) calls it so.
if len(sys.argv) > 2 and sys.argv[1] == "-m" and sys.argv[2].split(".")[0] == "amp_runtime":
    module = sys.argv[2]
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    sys.exit(0)

from amp_runtime.deferred import UnpackFailed  # noqa: E402
from amp_runtime.early_signals import keep_sigterm  # noqa: E402

keep_sigterm()  # before the CLI's imports: a SIGTERM meanwhile drains once serving (entry.py)
try:
    from amp_runtime.cli import main

    code = main()
except UnpackFailed as exc:  # TMPDIR full or read-only: one line, as a config error
    print(exc, file=sys.stderr)
    code = 2
sys.exit(code)
