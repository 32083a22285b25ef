"""A full disk is an outage of the disk, not of the process: with the DuckDB store on a small
tmpfs that the test fills, writes answer 503 `STORE_UNAVAILABLE` with Retry-After within 2 s,
`/ready` says why, nothing answered 503 is saved, and once space returns everything answers again
without a restart."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from ..durable.util import COUNTER, create, worker_path
from ..helpers import spawn_server, wait_until

ANSWER_WITHIN_S = 2.0


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs mounted at tmp_path/disk (skips where mounting is not allowed)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Writes a file until the disk has no byte left; returns it (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"x" * chunk
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def _timed(client: httpx.AsyncClient, name: str) -> tuple[httpx.Response, float]:
    started = trio.current_time()
    response = await create(client, COUNTER, name)
    return response, trio.current_time() - started


async def test_a_full_disk_answers_503_and_space_returning_serves_again_without_a_restart(
        nursery, tmp_path, small_disk):
    proc = await spawn_server(nursery, small_disk / "data",
                              env={"AMP_JOBS_OUTPUT_DIR": str(tmp_path / "datasets")})
    async with httpx.AsyncClient(base_url=proc.url, timeout=ANSWER_WITHIN_S + 5) as client:
        assert (await create(client, COUNTER, "before")).status_code == 200

        filler = await trio.to_thread.run_sync(_fill, small_disk)
        # The first few small writes may still fit in pages the files hold already.
        saved, refused = ["before"], []
        for n in range(2000):
            name = f"full-{n}"
            response, took = await _timed(client, name)
            assert took <= ANSWER_WITHIN_S, (name, took)
            if response.status_code == 200 and not refused:
                saved.append(name)
                continue
            assert response.status_code == 503, response.text
            assert response.headers.get("Retry-After"), response.headers
            refused.append(name)
            if len(refused) == 5:
                break
        assert len(refused) == 5, f"{len(saved)} writes fit on the full disk"
        ready = await client.get("/ready")
        assert ready.status_code == 503 and "store" in ready.json()["reason"], ready.text
        health = (await client.get("/health")).json()
        assert health["store"]["state"] == "unavailable" and "No space left" in health["store"]["reason"], health
        assert proc.proc.returncode is None

        filler.unlink()
        await wait_until(lambda: _status_is(client, "/ready", 200), timeout=15, interval=0.1)
        assert (await create(client, COUNTER, "after")).status_code == 200
        for name in refused:
            assert (await client.get(worker_path(COUNTER, name))).status_code == 404, name
        for name in (*saved, "after"):
            assert (await client.get(worker_path(COUNTER, name))).status_code == 200, name
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.output.decode(errors="replace")[-3000:]
    out = proc.output.decode(errors="replace")
    assert "Traceback" not in out, out[-4000:]
    assert out.count("available again") == 1, out[-4000:]


async def _status_is(client: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await client.get(path)).status_code == status
