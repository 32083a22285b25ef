"""Worker ids on one PostgreSQL store: a live id cannot run twice; a killed holder frees it."""

import signal

import httpx
import psycopg

from amp_runtime.core.postgres import worker_claim_key

from ..helpers import spawn_server

CLAIMED = "amp-runtime: worker id worker-01 is already claimed by another live process on this store"


async def test_a_second_peer_with_a_live_worker_id_exits_2_and_a_kill9_frees_it(nursery, tmp_path, pg_url):
    env = {"AMP_STORE_URL": pg_url}
    first = await spawn_server(nursery, tmp_path / "a", env=env)

    second = await spawn_server(nursery, tmp_path / "b", env=env, wait_ready=False)
    assert await second.wait(60) == 2
    out = second.output.decode(errors="replace")
    assert [line for line in out.splitlines() if line.startswith("amp-runtime:")] == [CLAIMED], out
    assert "Traceback" not in out
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        assert (await client.get("/jobs")).status_code == 200  # the first is unharmed

    first.kill9()
    await first.wait()
    third = await spawn_server(nursery, tmp_path / "c", env=env, timeout=60)  # PostgreSQL dropped the lock with the session
    third.send_signal(signal.SIGTERM)
    assert await third.wait() == 0


async def test_peers_with_different_worker_ids_share_one_store(nursery, tmp_path, pg_url):
    one = await spawn_server(nursery, tmp_path / "a", env={"AMP_STORE_URL": pg_url})
    config = tmp_path / "other.toml"
    config.write_text('[[workers]]\nid = "worker-02"\n')
    two = await spawn_server(nursery, tmp_path / "b", "--config", str(config), env={"AMP_STORE_URL": pg_url})
    with psycopg.connect(pg_url, autocommit=True) as admin:  # each holds its own id, on its claims session
        held = {row[0] for row in admin.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).fetchall()}
    assert {worker_claim_key("worker-01") & 0xFFFFFFFFFFFFFFFF, worker_claim_key("worker-02") & 0xFFFFFFFFFFFFFFFF} <= {
        h & 0xFFFFFFFFFFFFFFFF for h in held
    }
    for proc in (one, two):
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output.decode(errors="replace")
