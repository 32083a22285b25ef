"""Error answers of the durable workers API: 400 lists every problem, others {"error": ...}."""

import httpx
import trio

from amp_runtime.durable.templates import template_id_for

from . import templates_for_tests
from ..helpers import wait_until
from .util import start_suspended_request, APPROVAL, COUNTER, call, create, new_key, promise_ids, status, worker_path

FLAKY = template_id_for("test-flaky")
TYPED = template_id_for("test-typed")
UNKNOWN = "70ff8f69-e121-40ea-b59a-b17526f37a78"


async def test_unknown_template_and_worker_are_404(server):
    c = server.client
    r = await create(c, UNKNOWN, "w")
    assert r.status_code == 404 and "template" in r.json()["error"]
    r = await c.get(worker_path(COUNTER, "nobody"))
    assert r.status_code == 404 and "error" in r.json()
    assert (await c.get(f"/v1/templates/workers/{COUNTER}.nobody")).status_code == 404
    assert (await c.post(worker_path(COUNTER, "nobody") + "/key")).status_code == 404
    assert (await c.delete(worker_path(COUNTER, "nobody"))).status_code == 404
    r = await c.get("/v1/templates/workers/no-dot-here")
    assert r.status_code == 400 and r.json()["errors"]


async def test_duplicate_name_is_409_per_template(server):
    c = server.client
    assert (await create(c, COUNTER, "same")).status_code == 200
    r = await create(c, COUNTER, "same")
    assert r.status_code == 409 and "already exists" in r.json()["error"]
    assert (await create(c, APPROVAL, "same")).status_code == 200  # unique per template only


async def test_past_max_workers_is_403(server_factory):
    srv = await server_factory(durable={"max_workers": 2})
    c = srv.client
    assert (await create(c, COUNTER, "a")).status_code == 200
    assert (await create(c, APPROVAL, "b")).status_code == 200
    r = await create(c, COUNTER, "c")
    assert r.status_code == 403 and "maximum" in r.json()["error"]
    await c.delete(worker_path(COUNTER, "a"))
    assert (await create(c, COUNTER, "c")).status_code == 200


async def test_bad_creation_requests_are_400(server):
    c = server.client
    for body in ({"args": []}, {"name": 5}, {"name": "ok", "env": [["only-key"]]}, {"name": "bad name!"}):
        r = await c.post(f"/v1/templates/{COUNTER}/workers", json=body)
        assert r.status_code == 400, body
        assert isinstance(r.json()["errors"], list) and r.json()["errors"]


async def test_params_are_validated_against_the_signature(server):
    c = server.client
    await create(c, TYPED, "t")
    r = await call(c, TYPED, "t", "mix", [1, "s", [1.5, 2]])
    assert r.json() == {"result": [{"n": 1, "s": "s", "xs": [1.5, 2.0], "flag": False}]}
    r = await call(c, TYPED, "t", "mix", ["one", 2, ["x"], "yes"])
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert len(errors) == 4, errors
    assert "'n'" in errors[0] and "'s'" in errors[1] and "'xs'" in errors[2] and "'flag'" in errors[3]
    r = await call(c, TYPED, "t", "mix", [1])
    assert r.status_code == 400 and "takes 3 to 4 parameter(s), got 1" in r.json()["errors"][0]
    r = await call(c, TYPED, "t", "nope", [])
    assert r.status_code == 400 and "no function 'nope'" in r.json()["errors"][0]


async def test_every_bad_field_inside_a_typed_parameter_is_listed_with_its_path(server):
    c = server.client
    await create(c, TYPED, "t")
    assert (await call(c, TYPED, "t", "area", [{"width": 2, "height": 3}])).json() == {"result": [6.0]}
    r = await call(c, TYPED, "t", "area", [{"width": "wide", "height": None, "unit": 5}, "big"])
    assert r.status_code == 400
    errors = r.json()["errors"]
    for path in ("$.params[0].width", "$.params[0].height", "$.params[0].unit"):
        assert sum(path in e for e in errors) == 1, (path, errors)
    assert len(errors) == 4 and "'scale'" in errors[3], errors
    r = await call(c, TYPED, "t", "mix", [1, "s", ["x", 2, "y"]])
    assert [e for e in r.json()["errors"] if "$.params[2][0]" in e or "$.params[2][2]" in e] and len(r.json()["errors"]) == 2


async def test_count_and_type_problems_are_listed_together(server):
    c = server.client
    await create(c, COUNTER, "c")
    r = await call(c, COUNTER, "c", "add", ["x", 2])
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert len(errors) == 2 and "takes 1 parameter(s), got 2" in errors[0] and "'n'" in errors[1]


async def test_missing_or_unknown_key_and_function_are_400(server):
    c = server.client
    await create(c, COUNTER, "c")
    path = worker_path(COUNTER, "c") + "/invoke-and-await"
    r = await c.post(path, json={"params": [1]})
    assert r.status_code == 400
    assert len(r.json()["errors"]) == 2  # no invocation-key, no function
    r = await c.post(path, params={"invocation-key": "not-issued", "function": "add"}, json={"params": [1]})
    assert r.status_code == 400 and "unknown invocation key" in r.json()["errors"][0]
    key = await new_key(c, COUNTER, "c")
    r = await c.post(path, params={"invocation-key": key, "function": "add", "calling-convention": "grpc"},
                     json={"params": [1]})
    assert r.status_code == 400
    r = await c.post(path, params={"invocation-key": key, "function": "add"}, content=b"{not json")
    assert r.status_code == 400 and r.json()["errors"]
    # A key belongs to its worker.
    await create(c, COUNTER, "other")
    r = await call(c, COUNTER, "other", "add", [1], key=key)
    assert r.status_code == 400


async def test_stdio_calling_convention(server):
    c = server.client
    await create(c, COUNTER, "c")
    r = await call(c, COUNTER, "c", "add", ["[4]"], **{"calling-convention": "stdio"})
    assert r.status_code == 200 and r.json() == {"result": ["4"]}
    r = await call(c, COUNTER, "c", "add", [4], **{"calling-convention": "stdio"})
    assert r.status_code == 400


async def test_invoke_and_await_times_out_with_504_and_keeps_the_result(server_factory):
    srv = await server_factory(durable={"invoke_timeout_s": 0.3})
    c = srv.client
    await create(c, APPROVAL, "a")
    key = await new_key(c, APPROVAL, "a")
    r = await call(c, APPROVAL, "a", "request", ["slow"], key=key)
    assert r.status_code == 504 and "error" in r.json()
    assert await status(c, APPROVAL, "a") == "Suspended"
    (promise,) = await promise_ids(c, APPROVAL, "a")
    await c.post(worker_path(APPROVAL, "a") + "/complete", json={"oplogIdx": promise, "data": [9]})

    async def idle():
        return await status(c, APPROVAL, "a") == "Idle"

    await wait_until(idle)
    r = await call(c, APPROVAL, "a", "request", ["slow"], key=key)
    assert r.json() == {"result": [[9]]}


async def test_an_error_that_cannot_be_worded_fails_its_invocation_only(server_factory):
    srv = await server_factory(durable={"max_retries": 1, "retry_delay_s": 0.01})
    c = srv.client
    await create(c, FLAKY, "w")
    with trio.fail_after(10):
        r = await call(c, FLAKY, "w", "unworded")
    assert r.status_code == 500 and r.json()["error"] == "invocation failed: Unworded: <Unworded: its message could not be read>"
    meta = (await c.get(worker_path(FLAKY, "w"))).json()
    assert meta["status"] == "Failed" and meta["retryCount"] == 1  # max_retries, then failed
    await create(c, FLAKY, "other")  # the service goes on
    assert (await call(c, FLAKY, "other", "succeed_after", ["u", 0])).json() == {"result": [1]}


async def test_a_base_exception_fails_its_invocation_only(server_factory):
    """SystemExit & co. from a durable function fail that invocation, not the server."""
    srv = await server_factory(durable={"max_retries": 1, "retry_delay_s": 0.01})
    c = srv.client
    for kind in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException", "BadMessage"):
        await create(c, FLAKY, kind)
        with trio.fail_after(10):
            r = await call(c, FLAKY, kind, "halt", [kind])
        message = "<BadMessage: its message could not be read>" if kind == "BadMessage" else "halted"
        assert r.status_code == 500 and r.json()["error"] == f"invocation failed: {kind}: {message}", r.text
        assert (await c.get(worker_path(FLAKY, kind))).json()["status"] == "Failed"
    await create(c, FLAKY, "after")  # the service goes on
    assert (await call(c, FLAKY, "after", "succeed_after", ["h", 0])).json() == {"result": [1]}


async def test_raising_function_is_retried_then_failed(server_factory):
    srv = await server_factory(durable={"max_retries": 2, "retry_delay_s": 0.01})
    c = srv.client
    await create(c, FLAKY, "f")
    templates_for_tests.ATTEMPTS.clear()
    r = await call(c, FLAKY, "f", "succeed_after", ["a", 2])
    assert r.json() == {"result": [1]}  # state rolled back before each retry
    meta = (await c.get(worker_path(FLAKY, "f"))).json()
    assert meta["retryCount"] == 2 and meta["status"] == "Idle"
    key = await new_key(c, FLAKY, "f")
    r = await call(c, FLAKY, "f", "boom", key=key)
    assert r.status_code == 500 and "always" in r.json()["error"]
    meta = (await c.get(worker_path(FLAKY, "f"))).json()
    assert meta["status"] == "Failed" and meta["retryCount"] == 4
    r = await call(c, FLAKY, "f", "boom", key=key)  # the recorded outcome, not a new run
    assert r.status_code == 500 and "always" in r.json()["error"]
    r = await call(c, FLAKY, "f", "succeed_after", ["b", 0])
    assert r.status_code == 500 and "Failed" in r.json()["error"]
    assert (await c.post(worker_path(FLAKY, "f") + "/interrupt")).status_code == 200


async def test_worker_context_exposes_args_and_env(server):
    c = server.client
    await create(c, TYPED, "t", args=["-v"], env=[["MODE", "prod"]])
    r = await call(c, TYPED, "t", "echo_env")
    assert r.json() == {"result": [{"args": ["-v"], "env": {"MODE": "prod"}, "name": "t"}]}


async def test_api_key_is_required_when_configured(server_factory):
    srv = await server_factory(auth={"api_key": "sekret"})
    async with httpx.AsyncClient(base_url=srv.url) as anon:
        r = await anon.get("/v1/templates")
        assert r.status_code == 401 and "error" in r.json()
    r = await srv.client.get("/v1/templates", headers={"Authorization": "Bearer sekret"})
    assert r.status_code == 200


async def test_delete_fails_an_awaiting_caller_with_404(server):
    c = server.client
    await create(c, APPROVAL, "a")
    got = []
    async with trio.open_nursery() as nursery:
        await start_suspended_request(nursery, c, "a", got)
        assert (await c.delete(worker_path(APPROVAL, "a"))).status_code == 200
    assert got[0].status_code == 404


async def test_status_is_retrying_between_attempts(server_factory):
    srv = await server_factory(durable={"max_retries": 1, "retry_delay_s": 0.5})
    c = srv.client
    await create(c, FLAKY, "f")
    templates_for_tests.ATTEMPTS.clear()
    got = []
    async with trio.open_nursery() as nursery:
        async def caller():
            got.append(await call(c, FLAKY, "f", "succeed_after", ["r", 1]))

        nursery.start_soon(caller)

        async def retrying():
            return await status(c, FLAKY, "f") == "Retrying"

        await wait_until(retrying)
    assert got[0].json() == {"result": [1]}
    meta = (await c.get(worker_path(FLAKY, "f"))).json()
    assert meta["status"] == "Idle" and meta["retryCount"] == 1
