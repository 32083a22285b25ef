"""Two peers on one PostgreSQL store, one of them on a host whose clock is off by a minute
(libfaketime), far more than `[registry] liveness_s` (3 s here).

Registry liveness on a shared store is judged by the database's clock: the skewed peer's
workers stay live for both peers (never expired, never re-registered), a job for its worker is
placed and run there, and a worker that really goes silent still expires within its timeout.
"""

from __future__ import annotations

import glob
import time
from email.utils import parsedate_to_datetime

import pytest
import trio

from ..helpers import wait_until
from ..jobs.jobutil import wait_for_status
from ..registry.util import worker_ids
from .peerutil import FAST, clients, close_all, create_job, everywhere, spawn_peer, worker_of
from .test_registry_peers import expiry_lines

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
LIVENESS_S = float(FAST["AMP_REGISTRY_LIVENESS_S"])
SKEW_S = 60

pytestmark = pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime (Debian package faketime) is not installed")


def skewed_clock(offset_s: int) -> dict[str, str]:
    """The environment of a process whose wall clock is `offset_s` off; its monotonic clock
    (trio's timers) is left alone."""
    return {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME": f"{offset_s:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


async def clock_offset_s(client) -> float:
    """How far the peer's wall clock is from ours, by its HTTP `Date` header (whole seconds)."""
    response = await client.get("/workers")
    return parsedate_to_datetime(response.headers["date"]).timestamp() - time.time()


@pytest.mark.parametrize("offset_s", [-SKEW_S, SKEW_S], ids=["behind", "ahead"])
async def test_a_peer_whose_clock_is_off_keeps_its_workers_live_and_a_silent_worker_still_expires(
        nursery, tmp_path, pg_url, offset_s):
    peers = {"a": await spawn_peer(nursery, tmp_path, "a", pg_url),
             "b": await spawn_peer(nursery, tmp_path, "b", pg_url, **skewed_clock(offset_s))}
    by_name = clients(peers)
    own = {worker_of("a"), worker_of("b")}
    try:
        assert abs(await clock_offset_s(by_name["a"])) < 2
        assert abs(await clock_offset_s(by_name["b"]) - offset_s) < 2  # libfaketime works in the peer

        async def both_live(client):
            return own <= set(await worker_ids(client))

        await everywhere(by_name, both_live, timeout=20)
        registered_at = {w: (await by_name["a"].get(f"/workers/{w}")).json()["registered_at"] for w in own}

        # Several timeouts long, every peer lists both peers' workers as live at every look.
        deadline = trio.current_time() + 3 * LIVENESS_S
        while trio.current_time() < deadline:
            for name, client in by_name.items():
                live = set(await worker_ids(client))
                assert own <= live, f"{name} lists {sorted(live)}"
            await trio.sleep(0.1)
        assert expiry_lines(peers, worker_of("a")) == [] and expiry_lines(peers, worker_of("b")) == []
        for client in by_name.values():  # never expired and registered again in between
            assert {w: (await client.get(f"/workers/{w}")).json()["registered_at"] for w in own} == registered_at

        # A job for the skewed peer's worker, created at the other peer, runs there to the end.
        job = await create_job(by_name["a"], worker_of("b"), 199)
        done = await wait_for_status(by_name["a"], job["id"], "Completed", timeout=30)
        assert done["node_id"] == worker_of("b")

        # The skewed peer dies: its worker goes silent and expires at the other peer within its timeout.
        peers["b"].kill9()
        await peers["b"].wait()
        killed_at = trio.current_time()

        async def b_gone():
            return worker_of("b") not in await worker_ids(by_name["a"])

        await wait_until(b_gone, timeout=LIVENESS_S + 10, interval=0.05)
        await wait_until(lambda: expiry_lines(peers, worker_of("b")), timeout=10, interval=0.05)
        assert trio.current_time() - killed_at < LIVENESS_S + 5
        assert worker_of("a") in await worker_ids(by_name["a"])
    finally:
        await close_all(by_name)
