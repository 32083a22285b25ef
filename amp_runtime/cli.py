"""`amp-runtime serve | bench | call | jobs watch | --version`.

Exit codes: 0 after a clean drain, 2 for a configuration or startup problem the user can fix
(bad config, data dir, store in use, unsafe bind), 3 when the store stayed unreachable past a
non-zero `[store] reconnect_s`, 1 for a crash.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__, build_info
from .early_signals import default_sigterm
from .config import Config, ConfigError, load_config, parse_bind
from .gc_tuning import tune_gc

EXIT_STORE_GONE = 3  # not 2: the config may be fine, the store was away too long
LOOPBACK = ("127.", "localhost", "::1", "[::1]")


class StartupError(Exception):
    """A problem to report in one line with exit code 2."""


class _VersionAction(argparse.Action):
    """`--version`: the version, commit and build date; asks git only when given (in a checkout)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show the version, commit and build date and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line(build_info.current()))  # stdout, as argparse's own version action
        parser.exit()


def version_line(build: build_info.BuildInfo) -> str:
    committed = f" ({build.commit_timestamp})" if build.commit_timestamp else ""
    built = f"built {build.build_date}" if build.build_date else "not a build (run from a checkout)"
    return f"amp-runtime {build.version} commit {build.commit_sha}{committed} {built}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amp-runtime",
        description="A single-process job and task runtime: worker slots, jobs, durable workers, "
        "a worker registry, all behind one HTTP server.",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (Ctrl-C drains and exits)")
    serve.add_argument("--config", metavar="PATH", help="config file (default: ./config.toml if present)")
    serve.add_argument("--bind", metavar="HOST:PORT", help="listen address (default 127.0.0.1:1610)")
    serve.add_argument("--data-dir", metavar="DIR", help="where the DuckDB store lives (default ./data)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without [auth] api_key",
    )

    from .bench.cli import add_bench_parser
    from .client.cli import add_client_parsers

    add_bench_parser(commands)
    add_client_parsers(commands)
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    flags: dict[str, dict] = {}
    if args.bind:
        flags.setdefault("server", {})["bind"] = args.bind
    if args.data_dir:
        flags.setdefault("server", {})["data_dir"] = args.data_dir
    config = load_config(args.config, overrides=flags)
    host, _ = parse_bind(config.server.bind)
    if not config.auth.api_key and not host.startswith(LOOPBACK) and not args.insecure:
        raise StartupError(
            f"refusing to listen on {config.server.bind} without an API key: set [auth] api_key "
            "in the config file or AMP_AUTH_API_KEY in the environment, or pass --insecure"
        )
    return config


def serve_command(args: argparse.Namespace) -> int:
    import trio

    from .core.store import StoreError, StoreGone
    from .runtime import Runtime

    try:
        config = resolve_config(args)
    except (ConfigError, StartupError) as exc:
        print(f"amp-runtime: {exc}", file=sys.stderr)
        return 2
    try:
        Path(config.server.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"amp-runtime: cannot create data dir {config.server.data_dir}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2

    try:
        runtime = Runtime(config)
    except ConfigError as exc:
        print(f"amp-runtime: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(lambda task_status: runtime.run(handle_signals=True, task_status=task_status))
            tune_gc(config)
            url = urls[0] if urls else config.server.bind
            print(f"amp-runtime {__version__} listening on {url} (data: {config.server.data_dir})", flush=True)

    try:
        trio.run(main)
    except BaseException as exc:
        store_error = _find(exc, StoreError)
        if store_error is not None:
            print(f"amp-runtime: {store_error}", file=sys.stderr)
            return EXIT_STORE_GONE if isinstance(store_error, StoreGone) else 2
        os_error = _find(exc, OSError)
        if os_error is not None:  # the port is taken, the address is not ours, ...
            print(
                f"amp-runtime: cannot listen on {config.server.bind}: {os_error.strerror or os_error}",
                file=sys.stderr,
            )
            return 2
        if _find(exc, KeyboardInterrupt) is not None:
            return 0
        # A crash (the store actor failed, an actor ran out of restarts): the store was
        # flushed and closed on the way out; say what happened and fail loudly.
        logging.getLogger("amp_runtime").critical("fatal: %s", exc, exc_info=exc)
        return 1
    return 0


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` inside a (possibly nested) exception group."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def exit_now(code: int) -> NoReturn:
    """End the process once the runtime has stopped: threads it abandoned (work that ignored
    cancellation) die here instead of running on, and slowing interpreter teardown by seconds."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        exit_now(serve_command(args))
    default_sigterm()  # only `serve` drains on SIGTERM (entry.py)
    if args.command == "bench":
        from .bench.cli import bench_command

        return bench_command(args)
    if args.command in ("call", "jobs"):
        from .client.cli import client_command

        return client_command(args)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
