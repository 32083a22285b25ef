"""The one-file binary (`./dev binary`), driven as a user would: copied alone into an empty
directory, run with PATH holding no Python and no venv. Built once per run (slow: skip with
-m "not binary")."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
import trio

from amp_runtime.durable.templates import template_id_for

from ..helpers import wait_until
from . import binary_util, walkthrough

pytestmark = [pytest.mark.system, pytest.mark.binary]

SPIN_MODULE = '''
import amp_runtime

@amp_runtime.function(name="spin", run="process", timeout_s=1)
def spin(input: dict) -> None:
    while True:
        pass
'''


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    # AMP_TEST_BINARY=dist/amp-runtime reuses a binary built by `./dev binary` (a fast local rerun).
    import os

    prebuilt = os.environ.get("AMP_TEST_BINARY")
    return Path(prebuilt).resolve() if prebuilt else binary_util.build(tmp_path_factory.mktemp("binary"))


@pytest.fixture
def place(built, tmp_path) -> binary_util.Place:
    return binary_util.place(built, tmp_path)


def serving_processes(server) -> list[psutil.Process]:
    """The bootloader (the PID started) and every process under it."""
    root = psutil.Process(server.proc.pid)
    return [root, *root.children(recursive=True)]


async def test_version_shows_the_build_info_a_wheel_records(place):
    code, out, err = await binary_util.run(place, "--version")
    assert code == 0, err
    line = out.strip()
    assert "\n" not in line, out
    match = re.fullmatch(r"(amp-runtime \S+) commit (\S+) \((\S+)\) built (\S+)", line)
    assert match, line
    version, sha, committed, built = match.groups()
    head = subprocess.run(["git", "-C", str(binary_util.ROOT), "log", "-1", "--format=%H"],
                          capture_output=True, text=True, check=True).stdout.strip()
    from setuptools_scm import get_version

    def clean(v: str) -> str:  # a tree changed since the build is "dirty": setuptools-scm adds .dYYYYMMDD
        return re.sub(r"\.d\d{8}$", "", v)

    assert clean(version) == clean(f"amp-runtime {get_version(root=str(binary_util.ROOT), fallback_version='0.1.0')}")
    assert sha == head
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", committed), committed
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", built), built


async def test_serves_every_family_with_docs_and_dashboard(place, nursery):
    server = await binary_util.serve(nursery, place)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        health = (await client.get("/health")).json()
        assert health["status"] == "ok", health
        openapi = (await client.get("/openapi")).json()
        for path in ("/task", "/jobs", "/workers", "/v1/templates", "/metrics"):
            assert path in openapi["paths"], path
        page = (await client.get("/docs")).text
        assets = re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', page)
        assert len(assets) == 2
        import swagger_ui

        shipped = Path(swagger_ui.__file__).parent / "static"
        for name in [a.rsplit("/", 1)[1] for a in assets] + ["swagger-ui.js", "favicon-32x32.png"]:
            got = await client.get(f"/docs/static/{name}")
            assert got.status_code == 200 and got.content == (shipped / name).read_bytes(), name
        ui = await client.get("/ui")
        assert ui.status_code == 200
        for asset in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', ui.text):
            assert (await client.get(asset)).status_code == 200, asset
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200 and "amp_uptime_seconds" in metrics.text

        echo = await client.post("/task", json={"function": "echo", "input": {"a": 1}, "contract": 1})
        assert echo.json()["result"] == {"a": 1}
        thread = await client.post("/task", json={"function": "hash_sync", "input": {"data": "x"}, "contract": 1})
        assert thread.status_code == 200, thread.text
        burn = await client.post("/task", json={"function": "cpu_burn_process", "input": {"n": 1000}, "contract": 1})
        assert burn.status_code == 200 and burn.json()["success"], burn.text
        workers = [p for p in serving_processes(server) if "--multiprocessing-fork" in p.cmdline()]
        assert workers and all(p.exe() == str(place.binary) for p in workers), "worker processes are the binary"

        job = await client.post("/jobs", json={"dataset": "example/blocks@1.0.0", "start_block": 0, "end_block": 99})
        assert job.status_code in (200, 201), job.text
        template = template_id_for("counter")
        created = await client.post(f"/v1/templates/{template}/workers", json={"name": "c1"})
        assert created.status_code in (200, 201), created.text
        key = (await client.post(f"/v1/templates/{template}/workers/c1/key")).json()["value"]
        added = await client.post(f"/v1/templates/{template}/workers/c1/invoke-and-await",
                                  params={"invocation-key": key, "function": "add"}, json={"params": [5]})
        assert added.json()["result"] == [5], added.text
        assert (await client.get("/workers")).status_code == 200
        await wait_until(lambda: _job_done(client, job.json()["id"]), timeout=30)

    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0
    assert not list(place.tmpdir.glob("_MEI*")), "the bootloader removed what it unpacked"


async def _job_done(client: httpx.AsyncClient, job_id) -> bool:
    return (await client.get(f"/jobs/{job_id}")).json()["status"] == "Completed"


async def test_user_functions_from_functions_paths_in_every_run_kind(place, nursery):
    app = place.dir / "app"
    app.mkdir()
    walkthrough.write_files(app)  # README's walk-through: async, thread and run="process" functions
    (app / "more").mkdir()
    (app / "more" / "spinning.py").write_text(SPIN_MODULE)
    (app / "config.toml").write_text('[functions]\nmodules = ["shapes", "spinning"]\npaths = [".", "more"]\n')
    server = await binary_util.serve(nursery, place, "--config", "app/config.toml")
    await walkthrough.check_calls(server.url)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        with trio.fail_after(20):
            spun = await client.post("/task", json={"function": "spin", "input": {}, "contract": 1})
        assert spun.json()["status"] == "timed_out", spun.text
    # The worker process that spun was killed: none is left running at full CPU.
    await wait_until(lambda: not any(p.status() == psutil.STATUS_RUNNING and "--multiprocessing-fork" in p.cmdline()
                                     for p in serving_processes(server)[1:]), timeout=10)
    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0


async def test_a_module_importing_what_the_binary_lacks_is_exit_2_in_one_line(place):
    (place.dir / "needs_numpy.py").write_text("import amp_runtime\nimport numpy\n")
    (place.dir / "config.toml").write_text('[functions]\nmodules = ["needs_numpy"]\n')
    code, out, err = await binary_util.run(place, "serve")
    assert code == 2 and out == ""
    assert err == "amp-runtime: functions.modules: 'needs_numpy' imports 'numpy', but this binary does not bundle it\n"


async def test_kill_9_of_the_started_pid_leaves_nothing_serving(place, nursery):
    server = await binary_util.serve(nursery, place)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:  # a worker process too
        burn = await client.post("/task", json={"function": "cpu_burn_process", "input": {"n": 10}, "contract": 1})
        assert burn.json()["success"], burn.text
    processes = serving_processes(server)
    assert len(processes) >= 3, "a one-file binary is a bootloader and its child, here with a worker process"
    server.kill9()
    await wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes),
                     timeout=10)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.get("/health")


async def test_ctrl_c_drains_and_exits_0(place, nursery):
    import os

    server = await binary_util.serve(nursery, place)
    os.killpg(server.proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: bootloader and child both get it
    assert await server.wait() == 0
    assert b"stopped" in server.output


async def test_postgres_store_migrates(place, nursery, pg_url):
    env = {**place.env, "AMP_STORE_URL": pg_url}
    server = await binary_util.serve(nursery, place, env=env)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        echo = await client.post("/task", json={"function": "echo", "input": 1, "contract": 1})
        assert echo.json()["result"] == 1
    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0
    assert b"applied migrations" in server.output


async def test_bench_in_process_and_compare_with_servers_of_its_own(place):
    code, out, err = await binary_util.run(place, "bench", "--tasks", "200", "--json", timeout=120)
    assert code == 0, err
    assert json.loads(out)["ok"] == 200
    # --compare starts this binary as `-m amp_runtime serve` and `-m amp_runtime.bench.bare_asgi`.
    code, out, err = await binary_util.run(place, "bench", "--compare", "--tasks", "200", timeout=180)
    assert code == 0, err + out
    assert "bare" in out, out


UNPACK_INTO_FULL_TMPFS = """
mount -t tmpfs -o size=2m tmpfs "$TMPDIR" || exit 99
exec "$0" --version
"""
# Room for what the bootloader unpacks (about 57 MB), not for what the process unpacks itself.
UNPACK_INTO_A_TMPFS_TOO_SMALL_FOR_THE_REST = """
mount -t tmpfs -o size=70m tmpfs "$TMPDIR" || exit 99
exec "$0" serve --bind 127.0.0.1:0 --data-dir data
"""
# Every place the bootloader tries read-only: TMPDIR, then /tmp, /var/tmp (and /usr/tmp where it
# exists). The binary is copied to a tmpfs on /mnt first, as /tmp is hidden.
UNPACK_WITH_NOWHERE_WRITABLE = """
mount -t tmpfs -o size=200m tmpfs /mnt && cp "$0" /mnt/amp-runtime || exit 99
for dir in "$TMPDIR" /tmp /var/tmp /usr/tmp; do
    [ -d "$dir" ] || continue
    mount -t tmpfs -o ro,size=1m tmpfs "$dir" || exit 99
done
cd / && exec /mnt/amp-runtime --version
"""


async def _in_mount_namespace(place, script: str):
    # The bootloader unpacks before any Python runs, so its own message and exit code are what
    # the user sees (README: "Where it unpacks"). Small or read-only file systems are tmpfs
    # mounts in a private mount namespace: root only.
    import os
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs")
    with trio.fail_after(60):
        done = await trio.run_process(["unshare", "-m", "sh", "-c", script, str(place.binary)],
                                      cwd=str(place.dir), env={**place.env, "PATH": "/usr/bin:/bin"},
                                      capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_a_full_tmpdir_stops_in_the_bootloader_before_python(place):
    code, out, err = await _in_mount_namespace(place, UNPACK_INTO_FULL_TMPFS)
    assert code == 255 and out == "", err
    assert err and all(re.match(r"\[PYI-\d+:ERROR\] Failed to extract", line) for line in err.splitlines()), err


async def test_a_tmpdir_full_for_the_libraries_the_process_unpacks_is_exit_2_in_one_line(place):
    code, out, err = await _in_mount_namespace(place, UNPACK_INTO_A_TMPFS_TOO_SMALL_FOR_THE_REST)
    assert code == 2 and out == "", err
    assert re.fullmatch(r"amp-runtime: cannot unpack \S+ into \S+: \[Errno 28\] No space left on device"
                        r" \(the binary unpacks into TMPDIR: README, One binary\)\n", err), err


async def test_nowhere_to_unpack_is_one_bootloader_line(place):
    code, out, err = await _in_mount_namespace(place, UNPACK_WITH_NOWHERE_WRITABLE)
    assert code == 255 and out == "", err
    assert re.fullmatch(r"\[PYI-\d+:ERROR\] Could not create temporary directory!\n", err), err


async def test_a_missing_tmpdir_falls_back_to_tmp(place):
    env = {**place.env, "TMPDIR": str(place.dir / "no-such-dir")}
    code, out, err = await binary_util.run(place, "--version", env=env)
    assert code == 0 and out.startswith("amp-runtime "), err
