"""What a new user does: build the wheel, `pip install` it without extras into a fresh venv,
run `amp-runtime serve` from a directory outside the checkout. (`./dev` installs the test
extra, which once hid a runtime dependency listed only there.)"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from ..helpers import READY, wait_until

ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_S = 240  # pip may fetch from the package index; its cache makes repeats fast
SERVE_TIMEOUT_S = 60
GRACE_S = 5

pytestmark = [pytest.mark.system, pytest.mark.skipif(
    importlib.util.find_spec("ensurepip") is None or importlib.util.find_spec("pip") is None,
    reason="packaging toolchain absent: this Python has no ensurepip or pip",
)]


def clean_env() -> dict[str, str]:
    """The caller's environment minus what would leak the checkout or its venv into the new one."""
    leaks = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")
    return {k: v for k, v in os.environ.items() if k not in leaks and not k.startswith("AMP_")}


async def run(args: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    with trio.fail_after(STEP_TIMEOUT_S):
        done = await trio.run_process(args, cwd=str(cwd), env=env, capture_stdout=True,
                                      stderr=subprocess.STDOUT, check=False)
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
    return output


async def build_and_install(tmp: Path, env: dict[str, str]) -> tuple[Path, str]:
    """The wheel built from the checkout, installed into a fresh venv; (venv, wheel version)."""
    # setuptools writes build/ and *.egg-info; keep them out of the checkout (and stale files out of the wheel)
    build_cfg = tmp / "build.cfg"
    build_cfg.write_text(f"[build]\nbuild_base = {tmp / 'build'}\n[egg_info]\negg_base = {tmp}\n")
    wheels = tmp / "wheels"
    await run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
              cwd=tmp, env={**env, "DIST_EXTRA_CONFIG": str(build_cfg)})
    [wheel] = wheels.glob("amp_runtime-*.whl")
    venv = tmp / "venv"
    await run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)
    await run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp, env=env)
    return venv, wheel.name.split("-")[1]


async def test_wheel_without_extras_serves_a_task_and_a_job_and_drains(tmp_path):
    env = clean_env()
    venv, wheel_version = await build_and_install(tmp_path, env)
    workdir = tmp_path / "run"  # outside the checkout: no config.toml, no source tree on sys.path
    workdir.mkdir()
    output = bytearray()
    ready = trio.Event()
    async with trio.open_nursery() as nursery:
        proc = await trio.lowlevel.open_process(
            [str(venv / "bin" / "amp-runtime"), "serve", "--bind", "127.0.0.1:0", "--data-dir", str(workdir / "data")],
            cwd=str(workdir), env={**env, "AMP_SERVER_SHUTDOWN_GRACE_S": str(GRACE_S)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

        async def pump() -> None:
            async for chunk in proc.stdout:
                output.extend(chunk)
                if READY.search(output):
                    ready.set()
            ready.set()

        nursery.start_soon(pump)
        try:
            with trio.fail_after(SERVE_TIMEOUT_S):
                await ready.wait()
            match = READY.search(output)
            assert match, f"the server exited before listening:\n{output.decode(errors='replace')}"
            version = await run([str(venv / "bin" / "amp-runtime"), "--version"], cwd=workdir, env=env)
            assert re.fullmatch(rf"amp-runtime {re.escape(wheel_version)} commit [0-9a-f]{{40}} \(\S+Z\) "
                                r"built \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", version), version
            async with httpx.AsyncClient(base_url=match.group(1).decode(), timeout=30) as client:
                await check_serving(client, wheel_version)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(GRACE_S + 10):
                code = await proc.wait()
            assert code == 0, output.decode(errors="replace")
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
    text = output.decode(errors="replace")
    assert "Traceback" not in text, text
    assert str(ROOT) not in text, "the installed package must not run from the checkout"


async def check_serving(client: httpx.AsyncClient, wheel_version: str) -> None:
    health = await client.get("/health")
    assert health.status_code == 200, health.text

    task = await client.post("/task", json={"function": "echo", "input": {"n": 7}, "contract": 1})
    assert task.status_code == 200, task.text
    assert task.json()["result"] == {"n": 7}

    created = await client.post("/jobs", json={"dataset": "example/blocks@1.0.0", "start_block": 0, "end_block": 99})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    seen: dict = {}

    async def finished() -> bool:
        seen.update((await client.get(f"/jobs/{job_id}")).json())
        return seen["status"] in ("Completed", "Failed")

    await wait_until(finished, timeout=60, interval=0.1)
    assert seen["status"] == "Completed", seen

    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    info = (await client.get("/workers/worker-01")).json()["info"]
    assert info["commit_sha"] == sha and re.fullmatch(r"[0-9a-f]{40}", sha)
    assert info["version"] == wheel_version
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["build_date"] or ""), info
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["commit_timestamp"] or ""), info
    # The same build in the authenticated /health (no key configured: every request is).
    assert (await client.get("/health")).json()["build"] == info
