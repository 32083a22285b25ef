"""Schema fuzzing: schemathesis against the server's own `/openapi`, every operation, on a real
socket (a server subprocess with an API key; the fuzzer sends the key).

Checks: no 5xx (`not_a_server_error`), every response matches its documented schema
(`response_schema_conformance`) and status (`status_code_conformance`); the server is still
healthy afterwards. Bounded for CI (few examples per operation, a total time cap); set
AMPTEST_FUZZ_EXAMPLES=N (and optionally AMPTEST_FUZZ_SECONDS) for a longer run, AMPTEST_FUZZ_SEED to vary.

Failures are grouped per operation. An operation with a known, reported bug goes into
KNOWN_FAILURES with the reason: its own strict xfail test then proves the bug is still there,
and the main test ignores only that operation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from ..helpers import spawn_server

pytestmark = pytest.mark.system  # starts processes (see tests/conftest.py)

KEY = "k"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"
EXAMPLES = int(os.environ.get("AMPTEST_FUZZ_EXAMPLES", "5"))
SECONDS = int(os.environ.get("AMPTEST_FUZZ_SECONDS", "25" if "AMPTEST_FUZZ_EXAMPLES" not in os.environ else "600"))
SEED = os.environ.get("AMPTEST_FUZZ_SEED", "20261123")

# "METHOD /path" -> why it fails (the bug, where it is). Empty: every operation passes.
KNOWN_FAILURES: dict[str, str] = {}


# A task's own outcome is part of the API: a function that fails is 500, one past its timeout 504,
# a worker in maintenance 503, each with a documented body (response_schema_conformance still
# checks it). /openapi lists each function with an example, so the fuzzer reaches them.
CONFIG = """
[[operations]]
include-path = "/task"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["1XX", "2XX", "3XX", "4XX", "500", "503", "504"]
"""


def schemathesis_command(url: str, report: Path) -> list[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    return [
        exe, "run", f"{url}/openapi",
        "--checks", CHECKS,
        "--header", f"Authorization: {KEY}",
        "--max-examples", str(EXAMPLES),
        "--max-time", str(SECONDS),
        "--seed", SEED,
        "--generation-database", "none",
        "--workers", "2",
        "--request-timeout", "10",
        "--no-color",
        "--report", "json,ndjson", "--report-json-path", str(report),
        "--report-ndjson-path", str(report.with_suffix(".ndjson")),
    ]


async def run_fuzzer(nursery: trio.Nursery, tmp_path: Path) -> tuple[dict, str, str]:
    """Fuzz a fresh server; returns (json report, CLI output, server output)."""
    env = {"AMP_AUTH_API_KEY": KEY, "AMP_LOG_LEVEL": "warning",
           # Jobs created by the fuzzer stay small and cheap; a fuzzed `sleep` or endless stream
           # ends (504) well before the fuzzer's request timeout instead of reading as a hang.
           "AMP_JOBS_BATCH_BLOCKS": "10", "AMP_JOBS_CONTINUOUS_BLOCKS_PER_S": "50",
           "AMP_TASKS_DEFAULT_TIMEOUT_S": "3", "AMP_DURABLE_INVOKE_TIMEOUT_S": "3"}
    server = await spawn_server(nursery, tmp_path / "data", env=env)
    report = tmp_path / "schemathesis.json"
    (tmp_path / "schemathesis.toml").write_text(CONFIG)  # read from the fuzzer's cwd
    with trio.fail_after(SECONDS + 60):
        result = await trio.run_process(
            schemathesis_command(server.url, report), capture_stdout=True, stderr=subprocess.STDOUT,
            check=False, cwd=str(tmp_path),
        )
    output = result.stdout.decode(errors="replace")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] in ("ok", "maintenance"), (
            f"server unhealthy after fuzzing: {health.status_code} {health.text}\n"
            f"{server.output.decode(errors='replace')[-3000:]}")
    server.kill9()
    await server.wait()
    assert report.exists(), f"schemathesis wrote no report:\n{output[-3000:]}"
    return ({**json.loads(report.read_text()), "unknown_errors": unknown_errors(report)}, output,
            server.output.decode(errors="replace"))


# Error types (from the ndjson events) that are a known, reported bug; any other fuzzer error (a
# connection reset, a read timeout: a hang or a crash) fails the run. Empty: the keep-alive stall
# after unread bodies (test_keepalive.py) is fixed, so its read timeouts count again.
KNOWN_ERROR_TYPES: set[str] = set()


def unknown_errors(report_path: Path) -> list[dict]:
    events = report_path.with_suffix(".ndjson")
    errors = []
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if "NonFatalError" in event or "FatalError" in event:
            body = event.get("NonFatalError") or event.get("FatalError")
            if body["value"].get("type") not in KNOWN_ERROR_TYPES:
                errors.append(body)
    return errors


def failures_by_operation(report: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for group in report["failures"]:
        for operation in group["operations"]:
            found.setdefault(operation, []).append(f'{group["title"]} (x{group["count"]})')
    return found


_cached: list[tuple[dict, str, str]] = []


async def fuzz_once(nursery, tmp_path) -> tuple[dict, str, str]:
    """One fuzz run per test session, shared by the tests below."""
    if not _cached:
        _cached.append(await run_fuzzer(nursery, tmp_path))
    return _cached[0]


async def test_fuzz_every_operation(nursery, tmp_path):
    report, output, server_output = await fuzz_once(nursery, tmp_path)
    operations = report["operations"]
    assert operations["tested"] == operations["selected"] >= 10, operations
    assert not report["unknown_errors"], (f"fuzzer errors (connection failures, crashes): "
                                          f"{report['unknown_errors']}\n{output[-4000:]}")
    found = {op: why for op, why in failures_by_operation(report).items() if op not in KNOWN_FAILURES}
    assert not found, (f"schemathesis failures per operation: {json.dumps(found, indent=1)}\n"
                       f"--- fuzzer output ---\n{output[-6000:]}\n--- server output ---\n{server_output[-3000:]}")
    assert "Traceback" not in server_output, server_output[-3000:]


if KNOWN_FAILURES:

    @pytest.mark.parametrize(
        "operation",
        [pytest.param(op, marks=pytest.mark.xfail(reason=why, strict=True)) for op, why in KNOWN_FAILURES.items()],
    )
    async def test_known_fuzz_failure_is_fixed(nursery, tmp_path, operation):
        """One strict xfail per operation with a reported bug: flips to XPASS once it is fixed."""
        report, _, _ = await fuzz_once(nursery, tmp_path)
        assert operation not in failures_by_operation(report)
