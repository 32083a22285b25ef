"""A peer that hangs inside a store transaction (stopped, frozen VM) must not block the others'
store for good: its session is ended by the server and its locks go with it."""

from __future__ import annotations

import httpx
import trio

from amp_runtime.core.postgres import PostgresBackend
from amp_runtime.core.store import advisory_key

from ..durable.util import COUNTER, create
from .peerutil import spawn_peer


async def test_a_peer_session_hung_inside_a_transaction_does_not_block_the_other_peers(nursery, tmp_path, pg_url):
    peer = await spawn_peer(nursery, tmp_path, "a", pg_url)
    # The hung peer's store session, opened as a peer opens it, stopped between two statements
    # of a transaction that holds the lock every durable create takes.
    hung = PostgresBackend(pg_url).connect()
    try:
        hung.execute("BEGIN TRANSACTION")
        hung.lock_for_transaction(advisory_key("durable_workers"))
        async with httpx.AsyncClient(base_url=peer.url, timeout=60) as client:
            with trio.fail_after(30):
                response = await create(client, COUNTER, "blocked-by-a-hung-peer")
        assert response.status_code == 200, response.text
    finally:
        hung.close()


def test_the_store_url_keeps_its_own_options_and_may_set_the_timeout_itself(pg_url):
    joiner = "&" if "?" in pg_url else "?"
    own = PostgresBackend(pg_url + joiner + "options=-c%20application_name%3Dmine").connect()
    chosen = PostgresBackend(pg_url + joiner + "options=-c%20idle_in_transaction_session_timeout%3D42s").connect()
    try:
        assert own.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("10s",)
        assert chosen.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("42s",)
    finally:
        own.close()
        chosen.close()
