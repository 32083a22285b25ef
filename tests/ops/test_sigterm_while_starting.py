"""SIGTERM before the runtime watches signals (here: while its start waits for the store's
migration lock, which the test holds) is not fatal: once started the process drains and exits
0, as for any SIGTERM, instead of dying of the signal's default action (143)."""

from __future__ import annotations

import signal

import psycopg

from amp_runtime.core.postgres import MIGRATION_LOCK_KEY

from ..helpers import spawn_server, wait_until


async def test_a_sigterm_while_the_store_opens_drains_and_exits_0(nursery, tmp_path, pg_url):
    with psycopg.connect(pg_url, autocommit=True) as holder, psycopg.connect(pg_url, autocommit=True) as watcher:
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        server = await spawn_server(nursery, tmp_path / "data", env={"AMP_STORE_URL": pg_url}, wait_ready=False)

        def waits_for_the_lock() -> bool:  # the server's start is in the migration lock's queue
            return bool(watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0])

        await wait_until(waits_for_the_lock, timeout=30, interval=0.05)
        server.send_signal(signal.SIGTERM)
        holder.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
    code = await server.wait()
    output = server.output.decode(errors="replace")
    assert code == 0, output
    assert "received SIGTERM while starting: draining" in output, output
