"""Losing the PostgreSQL connection: a serving process reconnects, answers the write caught on the
broken connection with a coded 503, and (with a non-zero `[store] reconnect_s`) exits 3 with one
line when the server stays gone past the bound."""

import signal

import httpx
import psycopg
import trio

from ..durable.util import COUNTER, create, worker_path
from ..helpers import spawn_server, wait_until

QUIET = {  # no timer writes of the process's own: the test's request is the one on the broken connection
    "AMP_REGISTRY_HEARTBEAT_S": "3600", "AMP_REGISTRY_EXPIRY_CHECK_S": "3600",
}


def _terminate_store_session(url: str) -> int:
    """Ends the server process's store session from another connection; returns how many were ended."""
    with psycopg.connect(url, autocommit=True) as admin:
        return admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'amp-runtime store' AND datname = current_database()"
        ).fetchone()[0]


async def _ok(client: httpx.AsyncClient, name: str) -> bool:
    r = await client.post(f"/v1/templates/{COUNTER}/workers", json={"name": name})
    assert r.status_code in (200, 503), r.text  # 503: caught on a broken connection, never a 500
    return r.status_code == 200


async def test_a_terminated_session_is_reconnected_and_the_caught_write_is_a_coded_503(nursery, tmp_path, pg_url):
    proc = await spawn_server(nursery, tmp_path / "d", env={"AMP_STORE_URL": pg_url, **QUIET})
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
        assert (await create(client, COUNTER, "before")).status_code == 200
        # Its instance has loaded itself from the store: nothing of the process's own reads next.
        assert (await client.get(worker_path(COUNTER, "before"))).status_code == 200
        assert _terminate_store_session(pg_url) == 1

        caught = await create(client, COUNTER, "caught")
        assert caught.status_code == 503, caught.text
        assert caught.headers["content-type"].startswith("application/json")
        assert "store connection was lost" in caught.text

        # The next requests succeed on the new connection; the one caught was not saved.
        assert (await create(client, COUNTER, "after")).status_code == 200
        for name, status in (("before", 200), ("caught", 404), ("after", 200)):
            assert (await client.get(worker_path(COUNTER, name))).status_code == status
        assert (await client.get("/jobs")).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    assert b"Traceback" not in proc.output
    await wait_until(lambda: b"reconnected" in proc.output, timeout=10)


async def test_a_read_on_a_terminated_session_is_retried_after_reconnecting(nursery, tmp_path, pg_url):
    proc = await spawn_server(nursery, tmp_path / "d", env={"AMP_STORE_URL": pg_url, **QUIET})
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
        assert _terminate_store_session(pg_url) == 1
        r = await client.get("/jobs")
        assert r.status_code == 200, r.text
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_the_runtime_keeps_serving_across_a_postgresql_restart(nursery, tmp_path, pg_server, pg_url):
    env = {"AMP_STORE_URL": pg_url}
    proc = await spawn_server(nursery, tmp_path / "d", env=env)
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
        assert await _ok(client, "before")
        await trio.to_thread.run_sync(pg_server.restart)
        names = iter(range(1000))
        await wait_until(lambda: _ok(client, f"after{next(names)}"), timeout=60, interval=0.2)
        for n in range(3):
            assert await _ok(client, f"steady{n}")
        # The worker id was claimed again on the restarted server: a second process still cannot have it.
        second = await spawn_server(nursery, tmp_path / "d2", env=env, wait_ready=False)
        assert await second.wait(60) == 2
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.output.decode(errors="replace")[-3000:]


async def test_a_store_gone_past_the_bound_exits_non_zero_with_one_line(nursery, tmp_path, own_pg_server):
    url = own_pg_server.create_database()
    env = {"AMP_STORE_URL": url, "AMP_STORE_RECONNECT_S": "2", "AMP_LOG_LEVEL": "error"}
    proc = await spawn_server(nursery, tmp_path / "d", env=env)
    await trio.to_thread.run_sync(own_pg_server.stop)
    code = await proc.wait(60)
    out = proc.output.decode(errors="replace")
    assert code == 3, out  # not 2, a configuration problem's code
    lines = [line for line in out.splitlines() if line.startswith("amp-runtime:")]
    assert len(lines) == 1 and "unreachable" in lines[0] and "reconnect_s" in lines[0], out
    assert "Traceback" not in out


async def test_a_durable_call_and_a_job_caught_on_a_broken_connection_are_503s_then_work(nursery, tmp_path, pg_url):
    from ..durable.util import call
    from ..jobs.jobutil import DATASET

    proc = await spawn_server(nursery, tmp_path / "d", env={"AMP_STORE_URL": pg_url, **QUIET})
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
        assert (await create(client, COUNTER, "c")).status_code == 200
        assert (await call(client, COUNTER, "c", "add", [1])).status_code == 200

        assert _terminate_store_session(pg_url) == 1
        r = await client.post(worker_path(COUNTER, "c") + "/invoke", params={"function": "add"}, json={"params": [5]})
        assert r.status_code == 503, r.text
        r = await call(client, COUNTER, "c", "get")  # the instance rebuilt itself from the store
        assert r.status_code == 200 and r.json() == {"result": [1]}, r.text

        assert _terminate_store_session(pg_url) == 1
        r = await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 9})
        # On PostgreSQL the jobs scheduler also reads the table on its own: when such a read
        # meets the broken connection first, it reconnects and the create simply succeeds.
        if r.status_code != 201:
            assert r.status_code == 503 and r.json()["error_code"] == "STORE_UNAVAILABLE", r.text
            r = await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 9})
            assert r.status_code in (200, 201), r.text
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    # The instance and the scheduler were restarted (rebuilt from the store), not counted as crashes.
    await wait_until(lambda: b"restarting when the store answers" in proc.output, timeout=10)
    assert b"Traceback" not in proc.output
