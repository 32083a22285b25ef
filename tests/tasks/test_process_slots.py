"""`run="process"` functions over HTTP on a real socket: results, errors, hard cancel, crashes."""

import os
import signal

import httpx
import psutil
import pytest
import trio

import amp_runtime

from ..helpers import spawn_server, wait_until
from . import process_fns  # noqa: F401  (registers the test_proc_* functions)

pytestmark = pytest.mark.system  # starts processes (see tests/conftest.py)

CALL = {"contract": 1}
POOL = {"process_pool_size": 1}  # one worker process: the next task shows the pool recovered


async def post_task(client, function, input=None, **extra):
    return await client.post("/task", json={"function": function, "input": input or {}, **CALL, **extra})


async def read_pid(pid_file) -> int:
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60)
    return int(pid_file.read_text())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def worker_processes() -> set[int]:
    """Pids of this process's live multiprocessing workers (the in-process server's pool)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and not gone(child.pid):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


async def square_in_fresh_pool(client) -> int:
    r = await post_task(client, "test_proc_square", {"x": 7})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["value"] == 49
    return r.json()["result"]["pid"]


async def test_result_comes_from_another_process(server_factory):
    srv = await server_factory(tasks=POOL)
    pid = await square_in_fresh_pool(srv.client)
    assert pid != os.getpid()
    assert await square_in_fresh_pool(srv.client) == pid  # the worker process is reused
    r = await post_task(srv.client, "cpu_burn_process", {"n": 1000})
    assert r.status_code == 200 and r.json()["result"] == (await post_task(
        srv.client, "cpu_burn", {"n": 1000})).json()["result"]
    await srv.client.aclose()


async def test_exception_fails_the_task(server_factory):
    srv = await server_factory(tasks={**POOL, "expose_tracebacks": True})
    r = await post_task(srv.client, "test_proc_raise", {"x": 7})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["type"] == "ValueError" and error["message"] == "bad input 7"
    assert "raise_value_error" in error["traceback"]  # the worker's traceback travels back
    await square_in_fresh_pool(srv.client)
    await srv.client.aclose()


async def test_timeout_kills_the_worker_process(server_factory, tmp_path):
    srv = await server_factory(tasks=POOL)
    pid_file = tmp_path / "pid"
    async with trio.open_nursery() as nursery:
        answers = []

        async def call():
            answers.append(await post_task(srv.client, "test_proc_spin_short", {"pid_file": str(pid_file)}))

        nursery.start_soon(call)
        pid = await read_pid(pid_file)
    r = answers[0]
    assert r.status_code == 504 and r.json()["status"] == "timed_out"
    assert gone(pid)  # killed and reaped before the answer went out
    assert await square_in_fresh_pool(srv.client) != pid
    await srv.client.aclose()


async def test_delete_kills_the_worker_process_and_frees_the_slot(server_factory, tmp_path):
    srv = await server_factory(tasks=POOL, webhook={"allow_private": True, "attempts": 1})
    pid_file = tmp_path / "pid"
    r = await post_task(srv.client, "test_proc_spin", {"pid_file": str(pid_file)},
                        mode="webhook", webhook={"url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    pid = await read_pid(pid_file)
    r = await srv.client.delete(f"/tasks/{task_id}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert gone(pid)
    # The place is free at once and a replacement process starts in the background: the next
    # task runs in it.
    await wait_until(lambda: srv.runtime.services.tasks.process_slots.statistics()["idle"] == 1, timeout=60)
    (replacement,) = worker_processes()
    assert await square_in_fresh_pool(srv.client) == replacement
    await srv.client.aclose()


async def test_client_disconnect_kills_the_worker_process(server_factory, tmp_path):
    srv = await server_factory(tasks=POOL)
    pid_file = tmp_path / "pid"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post_task, srv.client, "test_proc_spin", {"pid_file": str(pid_file)})
        pid = await read_pid(pid_file)
        nursery.cancel_scope.cancel()  # the client goes away mid-request
    await wait_until(lambda: gone(pid), timeout=30)
    assert await square_in_fresh_pool(srv.client) != pid
    await srv.client.aclose()


@pytest.mark.parametrize("function, how", [("test_proc_exit", "exit code 3"), ("test_proc_segfault", "SIGSEGV")])
async def test_a_crashing_worker_fails_only_its_task(server_factory, function, how):
    srv = await server_factory(tasks=POOL)
    before = await square_in_fresh_pool(srv.client)
    r = await post_task(srv.client, function, {"code": 3})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["type"] == "WorkerProcessDied" and how in error["message"]
    assert gone(before)
    assert await square_in_fresh_pool(srv.client) != before  # the pool goes on
    await srv.client.aclose()


def test_process_functions_must_be_importable_by_name():
    with pytest.raises(TypeError, match="top level"):
        amp_runtime.function(name="test_proc_lambda", run="process")(lambda input: input)

    def nested(input):
        return input

    with pytest.raises(TypeError, match="top level"):
        amp_runtime.function(name="test_proc_nested", run="process")(nested)

    async def coroutine(input):
        return input

    with pytest.raises(TypeError, match="plain def"):
        amp_runtime.function(name="test_proc_async", run="process")(coroutine)
    with pytest.raises(ValueError, match="run must be"):
        amp_runtime.function(name="test_proc_bad", run="gpu")


async def test_stopping_the_server_leaves_no_worker_process(nursery, tmp_path):
    env = {"AMP_FUNCTIONS_MODULES": '["tests.tasks.process_fns"]', "AMP_TASKS_PROCESS_POOL_SIZE": "2",
           "AMP_SERVER_SHUTDOWN_GRACE_S": "1"}
    server = await spawn_server(nursery, tmp_path / "d", env=env, timeout=60)
    pid_file = tmp_path / "pid"
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        idle_pid = await square_in_fresh_pool(client)
        async def spin() -> None:
            try:
                await post_task(client, "test_proc_spin", {"pid_file": str(pid_file)})
            except httpx.HTTPError:
                pass  # past the grace period the server may close the connection: not the point here

        nursery.start_soon(spin)
        busy_pid = await read_pid(pid_file)  # SIGTERM comes mid-work
        children = {p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)}
        assert {idle_pid, busy_pid} <= children
        server.send_signal(signal.SIGTERM)
        assert await server.wait(timeout=60) == 0
    # multiprocessing's resource tracker sees the server's end of its pipe close, then exits too.
    await wait_until(lambda: all(gone(pid) for pid in children), timeout=10)
