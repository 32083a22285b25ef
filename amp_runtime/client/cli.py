"""`amp-runtime call FUNCTION [INPUT_JSON]` and `amp-runtime jobs watch ID`: the client from a shell.

Exit codes: 0 done, 1 the task (or job) failed (`type: message` on stderr), 2 refused or
unreachable (a bad request, a wrong key, no server)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .aio import DEFAULT_URL
from .blocking import Client
from .errors import AmpError, TaskFailed


def add_client_parsers(commands: Any) -> None:
    call = commands.add_parser("call", help="call a function on a running server and print its result as JSON")
    call.add_argument("function")
    call.add_argument("input", nargs="?", default="{}", help="the input as JSON (default {})")
    call.add_argument("--stream", action="store_true", help="print the items of a streaming function, one a line")
    _server_flags(call)
    jobs = commands.add_parser("jobs", help="jobs on a running server")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)
    watch = jobs_commands.add_parser("watch", help="show a job's progress per table until it ends")
    watch.add_argument("job_id", type=int)
    watch.add_argument("--interval", type=float, default=0.5, help="seconds between looks (default 0.5)")
    _server_flags(watch)


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    parser.add_argument("--key", default=None, help="the API key, if the server has one")


def client_command(args: argparse.Namespace) -> int:
    try:
        with Client(args.url, api_key=args.key) as client:
            if args.command == "call":
                return _call(client, args)
            return _watch(client, args)
    except TaskFailed as exc:
        print(f"{exc.type}: {exc.message}", file=sys.stderr)
        return 1
    except AmpError as exc:
        print(f"amp-runtime: {exc}", file=sys.stderr)
        return 2


def _call(client: Client, args: argparse.Namespace) -> int:
    try:
        task_input = json.loads(args.input)
    except json.JSONDecodeError as exc:
        print(f"amp-runtime: INPUT_JSON is not JSON: {exc}", file=sys.stderr)
        return 2
    if args.stream:
        for item in client.stream(args.function, task_input):
            print(json.dumps(item), flush=True)
    else:
        print(json.dumps(client.call(args.function, task_input)))
    return 0


def _watch(client: Client, args: argparse.Namespace) -> int:
    """A bar per table on a terminal (rich); otherwise a line per table each time it moves."""
    last: dict[str, int] = {}
    bars = _Bars() if sys.stdout.isatty() else None
    job: dict[str, Any] = {}
    try:
        for job, progress in client.watch_job(args.job_id, interval=args.interval):
            end = job["descriptor"].get("end_block")
            for table, row in progress["tables"].items():
                if bars is not None:
                    bars.show(table, row, end)
                elif last.get(table) != row["current_block"]:
                    last[table] = row["current_block"]
                    of = f"/{end}" if end is not None else ""
                    print(f"job {job['id']} {table}: block {row['current_block']}{of}, {row['files_count']} files,"
                          f" {row['total_size_bytes']} bytes", flush=True)
    finally:
        if bars is not None:
            bars.stop()
    print(f"job {job.get('id', args.job_id)}: {job.get('status')}" + (f": {job['error']}" if job.get("error") else ""))
    return 1 if job.get("status") == "Failed" else 0


class _Bars:
    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        self._progress.start()
        self._tasks: dict[str, Any] = {}

    def show(self, table: str, row: dict, end: int | None) -> None:
        total = None if end is None else end - row["start_block"] + 1
        if table not in self._tasks:
            self._tasks[table] = self._progress.add_task(table, total=total)
        self._progress.update(self._tasks[table], completed=max(0, row["current_block"] - row["start_block"] + 1))

    def stop(self) -> None:
        self._progress.stop()
