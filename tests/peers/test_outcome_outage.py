"""A webhook task that settles while PostgreSQL is away: its outcome is journaled before it is
delivered (the delivery waits for the store), so it is delivered once and never runs again
after a restart; an outcome delivered unjournaled would run the task again at the next start."""

from __future__ import annotations

import signal

import httpx
import trio

from ..helpers import spawn_server, wait_until
from ..tasks.test_containment import CONFIG, start_receiver, submit_webhook

STORE_AWAY_S = 2.0  # how long the test looks for a delivery that must not come while the store is away


async def test_an_outcome_settled_during_an_outage_is_journaled_before_it_is_delivered(
        nursery, tmp_path, own_pg_server):
    url = own_pg_server.create_database()
    receiver = await start_receiver(nursery)
    config, data = tmp_path / "config.toml", tmp_path / "data"
    config.write_text(CONFIG)
    env = {"AMP_STORE_URL": url}
    release, runs = tmp_path / "release", tmp_path / "runs"
    server = await spawn_server(nursery, data, "--config", str(config), env=env)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        task_id = await submit_webhook(client, receiver, "hold_until_released",
                                       {"release": str(release), "runs": str(runs)})
        await wait_until(runs.exists, timeout=30)  # running
        await trio.to_thread.run_sync(own_pg_server.halt)
        try:
            await wait_until(lambda: _ready_is(client, 503), timeout=30, interval=0.1)
            release.touch()  # it settles now, with the store away
            with trio.move_on_after(STORE_AWAY_S):
                await wait_until(lambda: receiver.of(task_id), timeout=STORE_AWAY_S + 1)
            assert not receiver.of(task_id), "delivered before its outcome was journaled"
        finally:
            await trio.to_thread.run_sync(own_pg_server.resume)
        await wait_until(lambda: receiver.of(task_id), timeout=30)

        async def delivered() -> bool:  # the attempt's answer is journaled just after it came
            view = (await client.get(f"/tasks/{task_id}")).json()
            return (view["status"], view["webhook_status"]) == ("completed", "delivered")

        await wait_until(delivered, timeout=30, interval=0.05)
    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0
    again = await spawn_server(nursery, data, "--config", str(config), env=env)
    async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
        assert (await client.get(f"/tasks/{task_id}")).json()["status"] == "completed"
    again.send_signal(signal.SIGTERM)
    assert await again.wait() == 0
    assert runs.read_text() == "ran\n", "the task ran again after the restart"
    assert [body["status"] for body in receiver.of(task_id)] == ["completed"]


async def _ready_is(client: httpx.AsyncClient, status: int) -> bool:
    try:
        return (await client.get("/ready")).status_code == status
    except httpx.TransportError:
        return False
