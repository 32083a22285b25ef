"""The one-file binary's entry point (packaging/amp-runtime.spec): the same CLI as the
installed `amp-runtime` command, after the frozen-process setup in amp_runtime.frozen."""

import sys

from amp_runtime.frozen import prepare

prepare()  # first: a worker process started by multiprocessing never reaches the CLI

from amp_runtime.cli import main  # noqa: E402

sys.exit(main())
