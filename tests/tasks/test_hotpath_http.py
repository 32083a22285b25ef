"""The hot path (`[http] hot_path`) answers byte for byte what the Quart routes answer.

The same raw requests go to a server with the hot path and to one without; status line, headers
(but `date`) and body must be equal once the task id and the run time, which differ by nature,
are masked."""

import json
import re

import trio

from amp_runtime.tasks import running as running_module

from ..helpers import wait_until
from . import fns

KEY = "hot-path-key"
_VOLATILE = [(re.compile(rb"[0-9a-f]{32}"), b"<id>"), (re.compile(rb'"duration_ms":[0-9.e-]+'), b'"duration_ms":0'),
             (re.compile(rb"date: [^\r]*\r\n"), b"")]


def request(path: str, body: bytes, *, key: str | None = KEY, content_type: bool = True) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
    if content_type:
        head.append("Content-Type: application/json")
    if key is not None:
        head.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(url: str, raw: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(raw)
    answer = b""
    with trio.fail_after(20):
        while True:
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
            data = await stream.receive_some(65536)
            if not data:
                break
            answer += data
    await stream.aclose()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert int(re.search(rb"content-length: (\d+)", head).group(1)) == len(body)
    answer = re.sub(rb"content-length: \d+", b"content-length: <n>", answer)  # the run time's digits vary
    for pattern, mask in _VOLATILE:
        answer = pattern.sub(mask, answer)
    return answer


def task(function, input=None, **extra) -> bytes:
    return json.dumps({"function": function, "input": input or {}, "contract": 1, **extra}).encode()


CASES = {
    "200 completed": ("/task", task("echo", {"a": [1, 2]})),
    "500 failed": ("/task", task("fail", {"message": "nope"})),
    "504 timed out": ("/task", task("test_slow")),
    "400 every problem": ("/task", b'{"function": "hello", "contract": -1, "priority": 0, "mode": "webhook"}'),
    "400 semantic problems": ("/task", task("hello", contract=7, mode="webhook", priority=5)),
    "400 typed input": ("/task", task("test_resize", {"width": 0})),
    "400 malformed": ("/task", b"{not json"),
    "400 wrong type": ("/task", b"[1, 2]"),
    "400 empty body": ("/task", b""),
    "400 too deep": ("/task", b'{"function": "echo", "input": ' + b"[" * 40 + b"]" * 40 + b"}"),
    "404 function": ("/task", task("no_such_function")),
    "200 named worker": ("/task", task("echo", {"b": 1}, worker="w")),
    "200 typed result": ("/task", task("test_typed_result", {"area": 2})),
    "500 result not JSON": ("/task", task("test_not_json")),
    "500 error not worded": ("/task", task("test_unwordable")),
    "400 unknown worker": ("/task", task("echo", worker="nobody")),
    "202 webhook": ("/task", task("echo", mode="webhook", webhook={"url": "http://127.0.0.1:9/hook"})),
    "413 over the limit": ("/task", task("echo", {"x": "y" * 5000})),
    "noop 200": ("/noop", task("echo")),
    "noop 400": ("/noop", b'{"input": 1}'),
}


async def both(server_factory):
    sections = dict(auth={"api_key": KEY}, http={"max_body_bytes": 4096},
                    webhook={"allow_private": True, "attempts": 1},
                    workers=[{"id": "w", "slots": 1, "max_queue": 1}])
    hot = await server_factory(**sections)
    cold = await server_factory(**{**sections, "http": {**sections["http"], "hot_path": False}})
    return hot, cold


async def test_same_answers_for_every_documented_status(server_factory):
    hot, cold = await both(server_factory)
    for name, (path, body) in CASES.items():
        ours, quart = await exchange(hot.url, request(path, body)), await exchange(cold.url, request(path, body))
        assert ours == quart, name
        assert ours.startswith(b"HTTP/1.1 " + name.split()[-1 if name.startswith("noop") else 0].encode()), (name, ours)
    for raw in (request("/task", task("echo"), key=None), request("/task", task("echo"), key="wrong"),
                request("/noop", task("echo"), key=None), request("/task", task("echo"), content_type=False)):
        assert await exchange(hot.url, raw) == await exchange(cold.url, raw)
    for srv in (hot, cold):
        await srv.client.aclose()


async def test_same_answers_when_full_and_in_maintenance(server_factory):
    hot, cold = await both(server_factory)
    answers = []
    for n, srv in enumerate((hot, cold)):
        worker = srv.runtime.services.tasks.workers["w"]
        async with trio.open_nursery() as nursery:
            gate = f"hot-path-full-{n}"
            for tag in ("running", "queued"):
                nursery.start_soon(exchange, srv.url, request("/task", task("test_gate", {"gate": gate, "tag": tag})))
            await wait_until(lambda: worker.state.free == 0 and worker.state.queued == 1, timeout=10)
            full = await exchange(srv.url, request("/task", task("echo")))
            fns.gate(gate).set()
        await srv.client.post("/off")
        maintenance = await exchange(srv.url, request("/task", task("echo")))
        await srv.client.post("/on")
        answers.append((full, maintenance))
        await srv.client.aclose()
    assert answers[0] == answers[1]
    assert answers[0][0].startswith(b"HTTP/1.1 429") and b"retry-after: 1" in answers[0][0]
    assert answers[0][1].startswith(b"HTTP/1.1 503")


async def test_same_answers_queued_cancelled_and_when_the_worker_fails(server_factory, monkeypatch):
    """A sync task answered through the queue, one cancelled by DELETE /tasks/{id}, and one its
    worker failed under (a slot task breaking on {"boom": true})."""
    intact = running_module.run_task

    async def run_task(task, expose_tracebacks):
        if isinstance(task.input, dict) and task.input.get("boom"):
            raise RuntimeError("injected: slot task")
        await intact(task, expose_tracebacks)

    monkeypatch.setattr(running_module, "run_task", run_task)
    hot, cold = await both(server_factory)
    answers = []
    for n, srv in enumerate((hot, cold)):
        worker = srv.runtime.services.tasks.workers["w"]
        got: dict[str, bytes] = {}

        async def call(name, body):
            got[name] = await exchange(srv.url, request("/task", body))

        for case, queued in (("queued", task("test_typed_result", {"area": 3})), ("failed", task("echo", {"boom": True}))):
            async with trio.open_nursery() as nursery:
                gate = f"hot-path-{case}-{n}"
                nursery.start_soon(call, f"before {case}", task("test_gate", {"gate": gate, "tag": case}))
                await wait_until(lambda: worker.state.free == 0, timeout=10)
                nursery.start_soon(call, case, queued)
                await wait_until(lambda: worker.state.queued == 1, timeout=10)
                fns.gate(gate).set()
            await wait_until(lambda: worker.state.free == 1, timeout=10)  # the failed one started again
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "cancelled", task("test_gate", {"gate": f"hot-path-cancelled-{n}"}))
            await wait_until(lambda: worker.state.free == 0, timeout=10)
            (task_id,) = worker.running_ids()
            assert (await srv.client.delete(f"/tasks/{task_id}")).status_code == 200
        answers.append(got)
        await srv.client.aclose()
    assert answers[0] == answers[1]
    statuses = {name: answer.split(b" ", 2)[1] for name, answer in answers[0].items()}
    assert statuses == {"before queued": b"200", "queued": b"200", "before failed": b"200", "failed": b"500",
                        "cancelled": b"409"}, answers[0]
    assert b'"type":"WorkerFailed"' in answers[0]["failed"] and b"injected" in answers[0]["failed"]


async def test_stream_tasks_still_stream(server_factory):
    hot, _ = await both(server_factory)
    async with hot.client.stream("POST", "/task", json={"function": "count", "input": {"n": 2}, "mode": "stream",
                                                        "contract": 1}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in r.aiter_text()])
    assert "event: end" in text


async def test_a_client_gone_cancels_its_sync_task(server_factory):
    hot, cold = await both(server_factory)
    for srv in (hot, cold):  # the same record either way
        worker = srv.runtime.services.tasks.workers["w"]
        host, port = srv.url.split("//")[1].split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(request("/task", task("test_gate", {"gate": "hot-path-never"})))
        await wait_until(lambda: worker.state.free == 0, timeout=10)
        (task_id,) = worker.running_ids()
        await stream.aclose()
        await wait_until(lambda: worker.state.free == 1, timeout=10)
        record = (await srv.client.get(f"/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}"})).json()
        assert record["status"] == "cancelled" and record["error"]["message"] == "the client went away", record
        await srv.client.aclose()


async def test_a_client_gone_while_its_sync_task_is_queued_takes_it_out_of_the_queue(server_factory):
    hot, _ = await both(server_factory)
    worker = hot.runtime.services.tasks.workers["w"]
    host, port = hot.url.split("//")[1].split(":")
    holder = await trio.open_tcp_stream(host, int(port))
    await holder.send_all(request("/task", task("test_gate", {"gate": "hot-queue", "tag": "hot-holder"})))
    await wait_until(lambda: worker.state.free == 0, timeout=10)
    leaver = await trio.open_tcp_stream(host, int(port))
    await leaver.send_all(request("/task", task("test_gate", {"gate": "hot-queue", "tag": "hot-leaver"})))
    await wait_until(lambda: worker.state.queued == 1, timeout=10)
    await leaver.aclose()
    await wait_until(lambda: worker.state.queued == 0, timeout=10)
    assert worker.state.free == 0  # the holder still runs
    fns.gate("hot-queue").set()
    answer = b""
    with trio.fail_after(10):
        while not answer.endswith(b"}"):  # the head, then the body
            answer += await holder.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 200") and b"hot-holder" in answer
    assert "hot-leaver" not in fns.STARTED  # taken out before it started: it never ran
    await holder.aclose()
    await hot.client.aclose()


async def test_a_client_gone_before_its_webhook_task_is_accepted_stops_the_admission(server_factory, monkeypatch):
    from amp_runtime.tasks import service as service_module

    hot, _ = await both(server_factory)
    checking, cancelled = trio.Event(), trio.Event()

    async def slow_check(url, allow_private):  # the webhook host's lookup, stuck
        checking.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    monkeypatch.setattr(service_module, "check_target", slow_check)
    host, port = hot.url.split("//")[1].split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(request("/task", task("echo", {"w": 1}, mode="webhook",
                                                webhook={"url": "http://hooks.example/in"})))
    with trio.fail_after(10):
        await checking.wait()
    await stream.aclose()
    with trio.fail_after(10):
        await cancelled.wait()
    state = hot.runtime.services.tasks.workers["w"].state
    assert state.queued == 0 and state.free == 1
    await hot.client.aclose()


async def test_a_function_without_an_await_point_answers_on_the_hot_path(server_factory):
    hot, cold = await both(server_factory)
    raw = request("/task", task("test_no_await", {"n": 3}))
    assert await exchange(hot.url, raw) == await exchange(cold.url, raw)
    assert b'"result":{"n":3,"twice":6}' in await exchange(hot.url, raw)
    failing = request("/task", task("test_no_await", {"n": -1}))
    answer = await exchange(hot.url, failing)
    assert answer == await exchange(cold.url, failing)
    assert answer.startswith(b"HTTP/1.1 500") and b'"type":"ValueError"' in answer
    for srv in (hot, cold):
        await srv.client.aclose()


async def test_a_sync_task_is_kept_alike_hot_and_cold(server_factory):
    """GET /tasks/{id} of a sync task answered at once on the hot path (`run_now`) and of one run
    on a lent slot through Quart: the same fields, a webhook URL sent with it included."""
    hot, cold = await both(server_factory)
    views = []
    for srv in (hot, cold):
        for body in ({"function": "echo", "contract": 1, "input": {"a": 1}, "priority": 4,
                      "webhook": {"url": "http://hooks.example/in"}},
                     {"function": "test_unwordable", "contract": 1}):
            answer = await srv.client.post("/task", json=body)
            view = (await srv.client.get(f"/tasks/{answer.headers['x-task-id']}")).json()
            assert view["created_at"] <= view["started_at"] <= view["finished_at"]
            views.append({k: v for k, v in view.items()
                          if k not in ("id", "created_at", "started_at", "finished_at", "duration_ms")})
        await srv.client.aclose()
    assert views[:2] == views[2:]
    assert views[0]["webhook_url"] == "http://hooks.example/in" and views[0]["priority"] == 4
    assert views[1]["error"] == {"type": "Unwordable", "message": "<Unwordable: its message could not be read>"}


async def test_a_function_without_an_await_point_on_a_free_slot_is_not_admitted(server_factory, monkeypatch):
    """It runs right in its request (`WorkerActor.run_now`); one that may suspend is admitted."""
    hot, _ = await both(server_factory)
    worker = hot.runtime.services.tasks.workers["w"]
    admitted = []
    admit = worker.admit
    monkeypatch.setattr(worker, "admit", lambda task, **kw: admitted.append(task.spec.name) or admit(task, **kw))
    r = await hot.client.post("/task", json={"function": "echo", "contract": 1, "input": {"n": 1}})
    assert r.status_code == 200 and r.json()["result"] == {"n": 1} and admitted == []
    r = await hot.client.post("/task", json={"function": "sleep", "contract": 1, "input": {"ms": 0}})
    assert r.status_code == 200 and admitted == ["sleep"]
    await hot.client.aclose()


async def test_idempotency_keyed_requests_go_through_quart(server_factory):
    hot, cold = await both(server_factory)
    raw = request("/task", task("echo", {"k": 1}))
    keyed = raw.replace(b"Host: test\r\n", b"Host: test\r\nIdempotency-Key: k-1\r\n")
    assert await exchange(hot.url, keyed) == await exchange(cold.url, keyed)
    for srv in (hot, cold):
        await srv.client.aclose()


async def exchange_streamed(url: str, raw: bytes) -> tuple[bytes, list[bytes]]:
    """A chunked answer: its head (masked as `exchange` masks) and its lines, sorted (items
    finish in no fixed order, and the hot path writes lines that finished together as one chunk)."""
    host, port = url.split("//")[1].split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(raw)
    answer = b""
    with trio.fail_after(20):
        while not answer.endswith(b"\r\n0\r\n\r\n"):
            data = await stream.receive_some(65536)
            if not data:
                break
            answer += data
    await stream.aclose()
    head, _, chunked = answer.partition(b"\r\n\r\n")
    body = b""
    while chunked:
        size, _, rest = chunked.partition(b"\r\n")
        body, chunked = body + rest[:int(size, 16)], rest[int(size, 16) + 2:]
    for pattern, mask in _VOLATILE:
        head, body = pattern.sub(mask, head), pattern.sub(mask, body)
    return head, sorted(body.splitlines(keepends=True))


BATCH_CASES = {
    "200 lines": (b'[{"function": "echo", "input": 1, "contract": 1}, {"function": "nope", "contract": 1},'
                  b' {"function": "hello", "contract": -1}, {"function": "fail", "contract": 1},'
                  b' {"function": "count", "mode": "stream", "contract": 1}]', "application/json", ""),
    "200 ndjson": (b'{"function": "echo", "input": 2, "contract": 1}\n{not json\n', "application/x-ndjson", ""),
    "200 sse": (b'[{"function": "echo", "input": 3, "contract": 1}]', "application/json", "text/event-stream"),
    "400 malformed": (b"[{not json", "application/json", ""),
    "400 not an array": (b'{"function": "echo", "contract": 1}', "application/json", ""),
    "400 empty": (b"[]", "application/json", ""),
    "413 too many": (b"[" + b",".join([b'{"function": "echo", "contract": 1}'] * 6) + b"]", "application/json", ""),
}


async def test_batches_same_answers(server_factory):
    sections = dict(auth={"api_key": KEY}, http={"max_batch": 5})
    hot = await server_factory(**sections)
    cold = await server_factory(**{**sections, "http": {**sections["http"], "hot_path": False}})
    for name, (body, content_type, accept) in BATCH_CASES.items():
        raw = request("/tasks", body, content_type=False).replace(
            b"Host: test\r\n", f"Host: test\r\nContent-Type: {content_type}\r\n".encode()
            + (f"Accept: {accept}\r\n".encode() if accept else b""))
        if name.startswith("200"):
            ours, quart = await exchange_streamed(hot.url, raw), await exchange_streamed(cold.url, raw)
        else:
            ours, quart = await exchange(hot.url, raw), await exchange(cold.url, raw)
        assert ours == quart, name
        assert (ours[0] if name.startswith("200") else ours).startswith(b"HTTP/1.1 " + name.split()[0].encode()), name
    unauthorized = request("/tasks", BATCH_CASES["200 sse"][0], key=None)
    assert await exchange(hot.url, unauthorized) == await exchange(cold.url, unauthorized)
    for srv in (hot, cold):
        await srv.client.aclose()
