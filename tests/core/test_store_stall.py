"""A store that stops answering (its PostgreSQL backend frozen with SIGSTOP, as a hung server or a
stalled disk) is an outage too: the write on the frozen session waits for its outcome, but every
request queued behind it and every new one answers 503 `STORE_UNAVAILABLE` within 2 s, `/ready`
says so, and none of those takes effect once the backend runs again."""

from __future__ import annotations

import os
import signal

import httpx
import psycopg
import trio

from ..durable.util import COUNTER, create, worker_path
from ..helpers import spawn_server, wait_until
from .test_store_reconnect import QUIET

ANSWER_WITHIN_S = 2.0


def _store_backend_pid(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        (pid,) = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'amp-runtime store'"
            " AND datname = current_database()").fetchone()
    return pid


async def test_a_frozen_store_session_makes_queued_and_new_requests_503_and_none_of_them_lands(
        nursery, tmp_path, pg_url):
    proc = await spawn_server(nursery, tmp_path / "d", env={"AMP_STORE_URL": pg_url, **QUIET})
    backend = _store_backend_pid(pg_url)
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
        assert (await create(client, COUNTER, "before")).status_code == 200
        os.kill(backend, signal.SIGSTOP)
        try:
            in_flight = {}

            async def first() -> None:  # handed to the frozen session: answered once its outcome is known
                in_flight["response"] = await create(client, COUNTER, "in-flight")

            nursery.start_soon(first)
            await wait_until(lambda: _status_is(client, "/ready", 503), timeout=ANSWER_WITHIN_S + 1, interval=0.05)
            refused = []
            for n in range(5):
                started = trio.current_time()
                response = await create(client, COUNTER, f"stalled-{n}")
                took = trio.current_time() - started
                assert response.status_code == 503 and "store is unavailable" in response.text, response.text
                assert response.headers.get("Retry-After") and took <= ANSWER_WITHIN_S, (took, response.headers)
                refused.append(f"stalled-{n}")
            assert (await client.get("/jobs")).status_code == 503
        finally:
            os.kill(backend, signal.SIGCONT)

        await wait_until(lambda: "response" in in_flight, timeout=30)
        # Its answer is the truth either way: saved and 200, or (a read of it withdrawn) 503 and not saved.
        answered = in_flight["response"].status_code
        assert answered in (200, 503), in_flight["response"].text
        await wait_until(lambda: _status_is(client, "/ready", 200), timeout=10, interval=0.05)
        for name in refused:
            assert (await client.get(worker_path(COUNTER, name))).status_code == 404, name
        assert (await client.get(worker_path(COUNTER, "in-flight"))).status_code == (200 if answered == 200 else 404)
        assert (await client.get(worker_path(COUNTER, "before"))).status_code == 200
        assert (await create(client, COUNTER, "after")).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    out = proc.output.decode(errors="replace")
    assert "Traceback" not in out, out[-4000:]
    store_lines = [line for line in out.splitlines() if "amp_runtime.store:" in line]
    assert len([line for line in store_lines if "unavailable (no answer for over" in line]) == 1, out[-4000:]
    assert len([line for line in store_lines if "available again" in line]) == 1, out[-4000:]


async def _status_is(client: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await client.get(path, timeout=ANSWER_WITHIN_S + 3)).status_code == status


async def test_a_process_stopped_while_its_store_session_is_frozen_still_exits_in_time(nursery, tmp_path, pg_url):
    grace_s = 2.0
    proc = await spawn_server(nursery, tmp_path / "d",
                              env={"AMP_STORE_URL": pg_url, "AMP_SERVER_SHUTDOWN_GRACE_S": str(grace_s), **QUIET})
    backend = _store_backend_pid(pg_url)
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
        assert (await create(client, COUNTER, "before")).status_code == 200
        os.kill(backend, signal.SIGSTOP)
        try:
            answers = []

            async def in_flight() -> None:
                try:
                    answers.append(await create(client, COUNTER, "in-flight"))
                except httpx.HTTPError as exc:  # the process may end before answering it
                    answers.append(exc)

            nursery.start_soon(in_flight)
            await wait_until(lambda: _status_is(client, "/ready", 503), timeout=ANSWER_WITHIN_S + 1, interval=0.05)
            signalled = trio.current_time()
            proc.send_signal(signal.SIGTERM)
            try:
                code = await proc.wait(timeout=grace_s + 10)
            except trio.TooSlowError:
                raise AssertionError(proc.output.decode(errors="replace")[-3000:]) from None
            assert trio.current_time() - signalled <= grace_s + 4, trio.current_time() - signalled
            assert code == 0, proc.output.decode(errors="replace")[-3000:]
        finally:
            os.kill(backend, signal.SIGCONT)
    out = proc.output.decode(errors="replace")
    assert "Traceback" not in out, out[-4000:]
