"""Build info: the registry's `info` names the commit that runs (from git in a checkout, from
the generated `_build_info.py` in a wheel); a build without git keeps what its sdist recorded."""

import subprocess
from datetime import datetime
from pathlib import Path

import httpx

import amp_runtime
from amp_runtime import build_info

from ..helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def head() -> tuple[str, str]:
    """(sha, commit time as git prints it, with offset) of the checkout's HEAD."""
    sha, when = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%H%n%cI"],
                               capture_output=True, text=True, check=True).stdout.split()
    return sha, when


async def test_own_workers_report_the_running_commit(server):
    sha, _ = head()
    info = (await server.client.get("/workers/worker-01")).json()["info"]
    assert info["commit_sha"] == sha
    assert info["commit_timestamp"].endswith("Z") and len(info["commit_timestamp"]) == 20
    assert info["version"] == amp_runtime.__version__
    assert info["build_date"] is None  # run from the checkout, not a build


def test_a_build_from_git_records_head_and_the_build_time(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    info = build_info.for_build(ROOT, "1.2.3")
    sha, when = head()
    assert info.commit_sha == sha and info.version == "1.2.3"
    assert info.commit_timestamp == build_info.utc_rfc3339(datetime.fromisoformat(when))
    assert info.build_date == "2023-11-14T22:13:20Z"


def test_a_build_without_git_keeps_what_the_sdist_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    recorded = build_info.BuildInfo("1.2.3", "a" * 40, "2026-01-02T03:04:05Z", "2026-01-02T04:00:00Z")
    (tmp_path / "amp_runtime").mkdir()
    (tmp_path / "amp_runtime" / build_info.GENERATED_MODULE).write_text(build_info.render(recorded))
    rebuilt = build_info.for_build(tmp_path, "1.2.3")
    assert (rebuilt.commit_sha, rebuilt.commit_timestamp) == ("a" * 40, "2026-01-02T03:04:05Z")
    assert rebuilt.build_date and rebuilt.build_date != recorded.build_date


def test_a_build_without_git_or_record_says_unknown(tmp_path):
    info = build_info.for_build(tmp_path, "0.1.0")
    assert (info.commit_sha, info.commit_timestamp) == ("unknown", None) and info.build_date


async def test_version_names_the_commit_and_says_a_checkout_is_not_a_build():
    code, output = await run_cli("--version")
    sha, _ = head()
    assert code == 0, output
    assert output.startswith(f"amp-runtime {amp_runtime.__version__} commit {sha} (") and output.count("\n") == 1
    assert "not a build (run from a checkout)" in output


async def test_the_authenticated_health_shows_the_build_and_the_public_one_does_not(server_factory):
    server = await server_factory(auth={"api_key": "k"})
    sha, _ = head()
    health = (await server.client.get("/health")).json()
    assert health["build"] == {"version": amp_runtime.__version__, "commit_sha": sha,
                               "commit_timestamp": build_info.current().commit_timestamp, "build_date": None}
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert "build" not in (await anonymous.get("/health")).json()
