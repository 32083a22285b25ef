"""`POST /tasks`: a batch of task requests, a line per task as it finishes, on a real socket."""

import json

import trio

from ..helpers import wait_until
from . import fns

CALL = {"contract": 1}


def echo(value, **extra):
    return {"function": "echo", "input": value, **CALL, **extra}


async def post_batch(client, items, **kwargs):
    r = await client.post("/tasks", json=items, **kwargs)
    return r, [json.loads(line) for line in r.text.splitlines() if line]


async def test_results_match_inputs_by_index(server):
    items = [echo({"n": i}) for i in range(50)]
    r, lines = await post_batch(server.client, items)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert sorted(line["index"] for line in lines) == list(range(50))
    for line in lines:
        assert line["status"] == "completed" and line["success"] is True and line["http_status"] == 200
        assert line["result"] == {"n": line["index"]} and line["id"] and line["duration_ms"] >= 0


async def test_bad_item_gets_its_own_line_and_the_others_run(server):
    items = [echo(1), {"function": "hello", "contract": -1, "priority": 0}, {"function": "nope", **CALL},
             echo(3), {"function": "fail", "input": {"message": "boom"}, **CALL}]
    r, lines = await post_batch(server.client, items)
    assert r.status_code == 200
    by_index = {line["index"]: line for line in lines}
    assert len(by_index) == 5
    assert by_index[0]["result"] == 1 and by_index[3]["result"] == 3
    bad = by_index[1]
    assert bad["status"] == "rejected" and bad["success"] is False and bad["http_status"] == 400
    assert bad["error"]["type"] == "INVALID_REQUEST"
    assert any("$.priority" in p for p in bad["problems"]) and any("$.contract" in p for p in bad["problems"])
    # The same problems a single POST /task lists.
    single = await server.client.post("/task", json=items[1])
    assert single.json()["error_message"] == bad["error"]["message"]
    assert by_index[2]["http_status"] == 404 and by_index[2]["error"]["type"] == "FUNCTION_NOT_FOUND"
    assert by_index[4]["status"] == "failed" and by_index[4]["http_status"] == 500
    assert by_index[4]["error"] == {"type": "RuntimeError", "message": "boom"}


async def test_stream_item_is_refused(server):
    items = [{"function": "count", "input": {"n": 2}, "mode": "stream", **CALL}, echo("ok")]
    r, lines = await post_batch(server.client, items)
    by_index = {line["index"]: line for line in lines}
    assert by_index[0]["status"] == "rejected" and by_index[0]["error"]["type"] == "STREAM_IN_BATCH"
    assert by_index[0]["http_status"] == 400
    assert by_index[1]["result"] == "ok"


async def test_malformed_batch_is_one_400(server):
    r = await server.client.post("/tasks", content=b"[{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error_code"] == "MALFORMED_JSON"
    r = await server.client.post("/tasks", json={"function": "echo", **CALL})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_REQUEST"
    r = await server.client.post("/tasks", json=[])
    assert r.status_code == 400 and r.json()["error_code"] == "EMPTY_BATCH"


async def test_over_max_batch_is_413(server_factory):
    srv = await server_factory(http={"max_batch": 3})
    r = await srv.client.post("/tasks", json=[echo(i) for i in range(4)])
    assert r.status_code == 413 and r.json()["error_code"] == "BATCH_TOO_LARGE"
    r, lines = await post_batch(srv.client, [echo(i) for i in range(3)])
    assert r.status_code == 200 and len(lines) == 3
    await srv.client.aclose()


async def test_ndjson_input(server):
    body = b"\n".join(json.dumps(echo(i)).encode() for i in range(3)) + b"\n{broken\n"
    r = await server.client.post("/tasks", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200
    lines = {line["index"]: line for line in map(json.loads, r.text.splitlines())}
    assert [lines[i]["result"] for i in range(3)] == [0, 1, 2]
    assert lines[3]["status"] == "rejected" and lines[3]["error"]["type"] == "MALFORMED_JSON"


async def test_sse_output(server):
    r = await server.client.post("/tasks", json=[echo(i) for i in range(3)],
                                 headers={"accept": "text/event-stream"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    results = sorted(json.loads(e[len("data: "):])["result"] for e in events)
    assert results == [0, 1, 2]


async def test_priority_order_inside_a_batch(server_factory):
    srv = await server_factory(workers=[{"id": "one", "slots": 1}])
    worker = srv.runtime.services.tasks.workers["one"]
    priorities = [10, None, 1, 5, 1]
    items = [{"function": "test_gate", "input": {"gate": "batch-open", "tag": f"p{p}-{i}"}, "priority": p, **CALL}
             for i, p in enumerate(priorities)]
    finished: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: srv.client.post("/task", json={
            "function": "test_gate", "input": {"gate": "batch-block", "tag": "blocker"}, **CALL}))
        await wait_until(lambda: worker.state.free == 0, timeout=10)

        async def batch():
            async with srv.client.stream("POST", "/tasks", json=items) as r:
                async for line in r.aiter_lines():
                    if line:
                        finished.append(json.loads(line)["result"])

        nursery.start_soon(batch)
        await wait_until(lambda: worker.state.queued == len(items), timeout=10)
        fns.gate("batch-open").set()
        fns.gate("batch-block").set()
    # Items of one batch are admitted concurrently: equal priorities keep no order among themselves.
    assert sorted(finished[:2]) == ["p1-2", "p1-4"] and finished[2:] == ["p5-3", "p10-0", "pNone-1"]
    await srv.client.aclose()


async def test_disconnect_cancels_unfinished_items_and_frees_slots(server_factory):
    srv = await server_factory(workers=[{"id": "two", "slots": 2}])
    items = [{"function": "test_gate", "input": {"gate": "never-opened", "tag": str(i)}, **CALL} for i in range(5)]

    async def health():
        return (await srv.client.get("/health")).json()

    async with srv.client.stream("POST", "/tasks", json=items) as r:
        assert r.status_code == 200
        with trio.fail_after(15):
            while (h := await health())["slots"]["free"] != 0 or h["queued"] != 3:
                await trio.sleep(0.05)
    # The client left: every slot and queue place comes back, seen through /health.
    with trio.fail_after(15):
        while (h := await health())["slots"]["free"] != 2 or h["queued"] != 0:
            await trio.sleep(0.05)
    r, lines = await post_batch(srv.client, [echo("after")])
    assert lines[0]["result"] == "after"
    await srv.client.aclose()


async def test_a_client_leaving_while_lines_wait_to_be_sent_ends_the_batch_without_a_traceback(server_factory):
    """Closed while its lines wait for a client that reads nothing, the batch's generator ends
    cleanly (a GeneratorExit leaving its nursery as an exception group was logged as an ASGI
    error)."""
    import json
    import socket
    from urllib.parse import urlsplit

    srv = await server_factory(workers=[{"id": "two", "slots": 2}])
    items = [echo("x" * 3500) for _ in range(250)] + [
        {"function": "test_gate", "input": {"gate": "never-opened", "tag": str(i)}, **CALL} for i in range(2)]
    body = json.dumps(items).encode()
    where = urlsplit(srv.url)
    for _ in range(3):
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((where.hostname, where.port))
        stream = trio.SocketStream(sock)
        await stream.send_all(b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(body) + body)
        with trio.fail_after(15):  # the gates hold both slots: the echo lines are all out by then
            while (await srv.client.get("/health")).json()["slots"]["free"] != 0:
                await trio.sleep(0.05)
        await stream.aclose()  # never read a byte
        with trio.fail_after(15):
            while (await srv.client.get("/health")).json()["slots"]["free"] != 2:
                await trio.sleep(0.05)
    logs = "\n".join((await srv.client.get("/logs")).json()["logs"])
    assert "Traceback" not in logs and "Error in ASGI" not in logs, logs[-3000:]
    await srv.client.aclose()


async def test_queued_item_past_its_deadline_gets_its_line_while_the_slot_stays_busy(server_factory):
    srv = await server_factory(workers=[{"id": "one", "slots": 1}])
    items = [{"function": "test_gate", "input": {"gate": "batch-overdue", "tag": "blocker"}, **CALL},
             {"function": "test_slow", "input": {}, **CALL}]  # test_slow's timeout is 0.2 s
    lines = []
    with trio.fail_after(20):
        async with srv.client.stream("POST", "/tasks", json=items) as r:
            async for line in r.aiter_lines():
                if line:
                    lines.append(json.loads(line))
                    fns.gate("batch-overdue").set()  # only once the queued item got its answer
    assert [(line["index"], line["status"], line["http_status"]) for line in lines] == [
        (1, "timed_out", 504), (0, "completed", 200)]
    await srv.client.aclose()


async def test_webhook_item_is_accepted_and_delivered(server_factory, nursery):
    from .receiver import start_receiver

    receiver = await start_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True})
    items = [echo("hooked", mode="webhook", webhook={"url": receiver.url}), echo("sync")]
    r, lines = await post_batch(srv.client, items)
    by_index = {line["index"]: line for line in lines}
    assert by_index[0]["status"] == "queued" and by_index[0]["http_status"] == 202 and by_index[0]["id"]
    assert by_index[1]["result"] == "sync"
    await receiver.wait_for(1)
    assert receiver.by_task()[by_index[0]["id"]]["result"] == "hooked"
    await srv.client.aclose()
