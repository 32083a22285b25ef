"""The one-file binary for tests/packaging/test_binary.py: built once per run by `./dev binary`,
copied alone into an empty directory and run there with a scrubbed environment (PATH is an
empty directory: no Python, no venv, no git)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trio

from ..helpers import READY, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 900


def build(out_dir: Path) -> Path:
    """`./dev binary OUT_DIR`; the path of the binary."""
    done = subprocess.run([str(ROOT / "dev"), "binary", str(out_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, f"./dev binary failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    binary = out_dir / "amp-runtime"
    assert f"{binary}: " in done.stdout, done.stdout  # it names the file, its size and version
    return binary


@dataclass
class Place:
    """An empty directory holding only the binary, and the environment to run it with."""

    dir: Path
    binary: Path
    env: dict[str, str]
    tmpdir: Path  # where the bootloader unpacks


def place(built: Path, tmp_path: Path) -> Place:
    home = tmp_path / "run"
    home.mkdir()
    binary = home / "amp-runtime"
    shutil.copy2(built, binary)
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"PATH": str(empty_bin), "HOME": str(home), "TMPDIR": str(tmpdir), "LANG": "C.UTF-8"}
    return Place(home, binary, env, tmpdir)


async def run(place: Place, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """(exit code, stdout, stderr) of the binary run to its end."""
    with trio.fail_after(timeout):
        done = await trio.run_process([str(place.binary), *args], cwd=str(place.dir), env=env or place.env,
                                      capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


async def serve(nursery: trio.Nursery, place: Place, *args: str, env: dict[str, str] | None = None,
                timeout: float = 60) -> ServerProcess:
    """`./amp-runtime serve --bind 127.0.0.1:0 ARGS` from the place; returns once it is listening."""
    proc = await trio.lowlevel.open_process(
        [str(place.binary), "serve", "--bind", "127.0.0.1:0", *args], cwd=str(place.dir),
        env=env or place.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives a command (Ctrl-C goes to all of it)
    )
    server = ServerProcess(proc)
    ready = trio.Event()

    async def pump() -> None:
        try:
            async for chunk in proc.stdout:
                server.output.extend(chunk)
                match = READY.search(server.output)
                if match and not ready.is_set():
                    server.url = match.group(1).decode()
                    ready.set()
        finally:
            ready.set()
            server.output_read.set()

    async def reap() -> None:
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:  # the test ended with it running: no process outlives its test
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()

    nursery.start_soon(pump)
    nursery.start_soon(reap)
    with trio.fail_after(timeout):
        await ready.wait()
    if not server.url:
        raise AssertionError(f"the binary exited before listening:\n{server.output.decode(errors='replace')}")
    return server
