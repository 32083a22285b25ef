"""Task routing between peers on one PostgreSQL store: any peer answers `POST /task` on the peer
with the most room (itself included), bursts spread over every free slot, all three modes, and a
killed peer drops out of routing at once."""

from __future__ import annotations

import collections
import time

import trio

from ..cluster.clusterutil import free_port, routes_to, spawn_peer, start_peers
from ..helpers import wait_until

SLEEP_MS = 1500


async def test_a_burst_on_as_many_free_slots_across_three_peers_starts_at_once(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(1, 2, 2))
    entry, a, b = peers.processes
    answers = []

    async def send(client) -> None:
        response = await client.post("/task", json={"function": "timed_sleep", "contract": 1,
                                                    "input": {"ms": SLEEP_MS}})
        answers.append(response)

    async with peers.client(entry) as client, trio.open_nursery() as burst:
        for _ in range(5):
            burst.start_soon(send, client)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    starts = sorted(r.json()["result"]["started"] for r in answers)
    # A task that waited for a slot would start a whole SLEEP_MS after the first.
    assert starts[-1] - starts[0] < SLEEP_MS / 1000 / 2, starts
    where = collections.Counter(r.headers.get("x-amp-node", "here") for r in answers)
    assert where == {"here": 1, a.url: 2, b.url: 2}, where


async def test_sync_tasks_through_one_peer_reach_every_peer_with_correct_results(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2, 2))
    per_peer: collections.Counter = collections.Counter()
    wrong = []

    async def send(client, i: int) -> None:
        response = await client.post("/task", json={"function": "sleep", "contract": 1, "input": {"ms": 50}})
        if response.status_code != 200 or response.json()["result"] != {"slept_ms": 50}:
            wrong.append((response.status_code, response.text))
        per_peer[response.headers.get("x-amp-node", "here")] += 1

    async with peers.client(peers.processes[0]) as client, trio.open_nursery() as senders:
        for i in range(60):
            senders.start_soon(send, client, i)
    assert not wrong, wrong[:3]
    assert set(per_peer) == {"here", peers.processes[1].url, peers.processes[2].url}, per_peer


async def test_stream_and_webhook_tasks_are_forwarded(nursery, tmp_path, pg_url):
    # The entry peer serves another group only: every default-group task is forwarded.
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2),
                              groups=(("elsewhere",), ("default",)))
    entry, target = peers.processes
    async with peers.client(entry) as client:
        body = {"function": "count", "contract": 1, "mode": "stream", "input": {"n": 4, "delay_ms": 400}}
        started = time.monotonic()
        async with client.stream("POST", "/task", json=body) as response:
            assert response.status_code == 200
            assert response.headers["x-amp-node"] == target.url
            events = []
            async for line in response.aiter_lines():
                if line.startswith("data: ") and not events:
                    first_after = time.monotonic() - started
                if line:
                    events.append(line)
        total = time.monotonic() - started
        assert first_after < 0.8 < 1.2 <= total, (first_after, total)
        assert events[0] == 'data: {"i":0}' and "event: end" in events

        response = await client.post("/task", json={
            "function": "echo", "contract": 1, "mode": "webhook", "input": 1,
            "webhook": {"url": entry.url + "/health"}})
        assert response.status_code == 202, response.text
        assert response.headers["x-amp-node"] == target.url
    task_id = response.json()["id"]
    async with peers.client(target) as direct:
        async def completed() -> bool:
            return (await direct.get(f"/tasks/{task_id}")).json().get("status") == "completed"

        await wait_until(completed, timeout=10, interval=0.05)


async def test_a_task_naming_a_worker_goes_to_its_peer_and_a_forwarded_task_is_never_forwarded_again(
        nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2), groups=(("elsewhere",), ("default",)))
    entry, target = peers.processes
    async with peers.client(entry) as client:
        response = await client.post("/task", json={"function": "hello", "contract": 1, "input": {"name": "peer"},
                                                    "worker": "p1-w"})
        assert response.status_code == 200 and response.json()["result"] == "Hello, peer!"
        assert response.headers["x-amp-node"] == target.url
        unknown = await client.post("/task", json={"function": "hello", "contract": 1, "input": {},
                                                   "worker": "nowhere"})
        assert unknown.status_code == 400 and "nowhere" in unknown.json()["error_message"]
        # Marked as forwarded by a peer: it runs here or nowhere (no default worker here).
        marked = await client.post("/task", json={"function": "hello", "contract": 1, "input": {}},
                                   headers={"X-Amp-Forwarded": "1"})
        assert marked.status_code == 404 and marked.json()["error_code"] == "NO_WORKER", marked.text


async def test_a_killed_peer_drops_out_of_routing_at_once_and_out_of_the_directory_after_liveness(
        nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(1, 4, 4))
    entry, doomed, survivor = peers.processes
    doomed.kill9()
    await doomed.wait()
    killed_at = time.monotonic()
    per_peer: collections.Counter = collections.Counter()

    async def send(client) -> None:
        response = await client.post("/task", json={"function": "sleep", "contract": 1, "input": {"ms": 200}})
        assert response.status_code == 200, response.text
        per_peer[response.headers.get("x-amp-node", "here")] += 1

    async with peers.client(entry) as client, trio.open_nursery() as senders:
        for _ in range(12):
            senders.start_soon(send, client)
    assert doomed.url not in per_peer and per_peer[survivor.url] >= 6, per_peer
    await wait_until(lambda: f"peer {doomed.url} left routing".encode() in entry.output, timeout=15)
    assert time.monotonic() - killed_at >= 2.0, "left the directory before [registry] liveness_s (3 s)"


async def test_a_stream_whose_peer_dies_ends_with_an_error_event(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2, 2), groups=(("elsewhere",), ("default",)))
    entry, target = peers.processes
    body = {"function": "count", "contract": 1, "mode": "stream", "input": {"n": 50, "delay_ms": 100}}
    lines = []
    async with peers.client(entry) as client, client.stream("POST", "/task", json=body) as response:
        async for line in response.aiter_lines():
            lines.append(line)
            if line == 'data: {"i":1}':
                target.kill9()
    assert "event: error" in lines, lines[-4:]
    assert '"NodeLost"' in lines[lines.index("event: error") + 1]


async def test_a_peer_restarted_after_kill9_on_the_same_address_is_routed_to_again(nursery, tmp_path, pg_url):
    peers = await start_peers(nursery, tmp_path, pg_url, slots=(2,), groups=(("elsewhere",),))
    (entry,) = peers.processes
    port = free_port()
    first = await spawn_peer(nursery, tmp_path, "again", peers.env, port=port)
    await wait_until(lambda: routes_to(entry, [first]), timeout=15, interval=0.05)
    first.kill9()
    await first.wait()
    seen = len(entry.output)
    second = await spawn_peer(nursery, tmp_path, "again", peers.env, port=port)
    assert second.url == first.url
    await wait_until(lambda: f"routing to peer {second.url} ".encode() in entry.output[seen:], timeout=15,
                     interval=0.05)
    async with peers.client(entry) as client:
        response = await client.post("/task", json={"function": "echo", "contract": 1, "input": 5})
    assert response.status_code == 200 and response.headers["x-amp-node"] == second.url, response.text
