"""A request body that is not UTF-8 is a 400 on every family, also when the bad bytes sit in a
field the struct does not know (msgspec skips those without reading them), and it writes nothing.
On a real socket, through the hot path and the Quart routes."""

import json

import pytest

from ..durable.util import COUNTER
from ..jobs.jobutil import DATASET

BAD = b"\xff\xfe"  # never UTF-8
CALL = {"contract": 1}


@pytest.fixture(params=[True, False], ids=["hot_path", "quart"])
async def srv(request, server_factory):
    server = await server_factory(http={"hot_path": request.param})
    yield server
    await server.client.aclose()


def with_bad_unknown_field(body: dict) -> bytes:
    """`body` as JSON with one more field, unknown to its struct, whose string is not UTF-8."""
    return json.dumps(body)[:-1].encode() + b', "client_note": "' + BAD + b'"}'


def assert_refused(r) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    assert "UTF-8" in r.text


async def post(srv, path: str, body: bytes, **headers):
    return await srv.client.post(path, content=body, headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize("path", ["/task", "/noop"])
async def test_a_task_request(srv, path):
    r = await post(srv, path, with_bad_unknown_field({"function": "echo", "input": 1, **CALL}))
    assert_refused(r)
    assert r.json()["error_code"] == "MALFORMED_JSON"
    assert srv.runtime.services.tasks.workers["worker-01"].state.total >= 1
    stats = (await srv.client.get("/metrics")).text
    assert 'function="echo"' not in stats  # nothing ran


async def test_a_batch(srv):
    item = with_bad_unknown_field({"function": "echo", "input": 1, **CALL})
    r = await post(srv, "/tasks", b"[" + item + b"]")
    assert_refused(r)
    r = await post(srv, "/tasks", item + b"\n", **{"content-type": "application/x-ndjson"})
    assert_refused(r)


async def test_a_job(srv):
    assert_refused(await post(srv, "/jobs", with_bad_unknown_field({"dataset": DATASET, "end_block": 9})))
    assert (await srv.client.get("/jobs")).json()["jobs"] == []


async def test_a_registry_report(srv):
    assert_refused(await post(srv, "/workers.register", with_bad_unknown_field({"worker": "node-utf8"})))
    assert (await srv.client.get("/workers/node-utf8")).status_code == 404


async def test_a_durable_worker(srv):
    path = f"/v1/templates/{COUNTER}/workers"
    assert_refused(await post(srv, path, with_bad_unknown_field({"name": "u1"})))
    assert (await srv.client.get(f"{path}/u1")).status_code == 404


async def test_utf8_outside_ascii_is_fine(srv):
    body = json.dumps({"function": "echo", "input": "caf\u00e9 \u2603", "note": "\u00fc", **CALL},
                      ensure_ascii=False).encode()
    r = await post(srv, "/task", body)
    assert r.status_code == 200 and r.json()["result"] == "caf\u00e9 \u2603"
