"""Secrets a webhook task carries: the password of its URL's userinfo is *** in every answer
(GET /tasks/{id}, live and from the journal after a restart, a 400 quoting the URL, the
delivery errors) and in every log line; its headers are kept at rest only until delivery settles."""

import logging

import amp_runtime
import msgspec
import trio

from ..helpers import start_server, wait_until
from ..pg import on_both_stores
from .receiver import serve_webhooks

PASSWORD = "s3cret-pw"
log = logging.getLogger("amp_runtime.test_secrets")


@amp_runtime.function(name="test_logs_its_input")
async def logs_its_input(input: dict) -> None:
    log.warning("calling %s", input["url"])  # user code logging a URL with its password


def task(url, headers=None, function="echo", input=None):
    return {"function": function, "input": input or {"x": 1}, "contract": 1, "mode": "webhook",
            "webhook": {"url": url, "headers": headers or {}}}


async def receiver(nursery):
    calls = []

    def answer(scope, body):
        calls.append(({k.decode().lower(): v.decode() for k, v in scope["headers"]}, msgspec.json.decode(body)))
        return 500 if len(calls) == 1 else 200  # the first attempt fails: the retry needs the headers

    return await serve_webhooks(nursery, answer), calls


async def delivered(client, task_id) -> bool:
    return (await client.get(f"/tasks/{task_id}")).json().get("webhook_status") == "delivered"


@on_both_stores
async def test_a_url_password_is_masked_everywhere_and_headers_are_dropped_once_delivered(nursery, tmp_path,
                                                                                          store_url):
    url, calls = await receiver(nursery)
    secret_url = url.replace("http://", f"http://amp:{PASSWORD}@") + "/hook"
    shown_url = url.replace("http://", "http://amp:***@") + "/hook"
    sections = {"webhook": {"allow_private": True, "base_delay_s": 0.01, "attempts": 3},
                "store": {"url": store_url}}
    async with trio.open_nursery() as first_run:  # left once the first server has stopped
        task_id = await first_server(first_run, tmp_path, sections, secret_url, shown_url, calls)

    again = await start_server(nursery, tmp_path / "d", **sections)  # now the journal answers
    view = await again.client.get(f"/tasks/{task_id}")
    assert view.status_code == 200 and view.json()["webhook_url"] == shown_url and PASSWORD not in view.text
    await again.client.aclose()
    await again.stop()


async def first_server(nursery, tmp_path, sections, secret_url, shown_url, calls) -> str:
    srv = await start_server(nursery, tmp_path / "d", **sections)
    r = await srv.client.post("/task", json=task(secret_url, {"X-Api-Key": "tok-123"}))
    assert r.status_code == 202 and PASSWORD not in r.text
    task_id = r.json()["id"]
    await wait_until(lambda: delivered(srv.client, task_id), timeout=15)
    view = await srv.client.get(f"/tasks/{task_id}")
    assert view.json()["webhook_url"] == shown_url and PASSWORD not in view.text
    assert [headers["x-api-key"] for headers, _ in calls] == ["tok-123"] * 2  # kept until settled
    rows = await srv.runtime.store.execute("SELECT webhook_headers FROM webhook_tasks WHERE id = ?", [task_id])
    assert rows == [("{}",)]  # settled: not kept at rest

    refused = await srv.client.post("/task", json=task(f"http://amp:{PASSWORD}@/no-host"))  # quoted in a 400
    assert refused.status_code == 400 and PASSWORD not in refused.text and "amp:***@" in refused.text
    batch = await srv.client.post("/tasks", json=[task(secret_url), task(f"http://amp:{PASSWORD}@/no-host")])
    assert batch.status_code == 200 and PASSWORD not in batch.text and "amp:***@" in batch.text  # the listing
    down = await srv.client.post("/task", json=task(f"http://amp:{PASSWORD}@127.0.0.1:1/hook"))
    down_id = down.json()["id"]
    await wait_until(lambda: _settled(srv.client, down_id), timeout=15)
    r = await srv.client.post("/task", json={"function": "test_logs_its_input", "contract": 1,
                                             "input": {"url": secret_url}})
    assert r.status_code == 200
    logs = await srv.client.get("/logs")
    assert "calling " + shown_url in logs.text and PASSWORD not in logs.text
    assert PASSWORD not in (await srv.client.get(f"/tasks/{down_id}")).text
    await srv.client.aclose()
    await srv.stop()
    return task_id


async def _settled(client, task_id) -> bool:
    return (await client.get(f"/tasks/{task_id}")).json().get("webhook_status") in ("delivered", "failed")
