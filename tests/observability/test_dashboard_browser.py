"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright).

The browser script runs in a worker thread with Playwright's sync API; it calls back into trio
(`trio.from_thread.run`) to start tasks and jobs through the HTTP API while the page watches.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "dash-key"
pytestmark = [pytest.mark.system,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")]


def _gauge(busy: int) -> str:
    return f'.gauge[data-worker="worker-01"][data-busy="{busy}"]'


def _points(selector: str) -> str:
    return f"() => Number(document.querySelector('{selector}')?.dataset.points || 0) > 0"


@contextmanager
def chromium_page(profile_parent: Path):
    """A page of a fresh headless Chromium (new profile dir), 1280x800."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_parent / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            context.close()


def browse(url: str, shots: Path, call) -> dict:
    """The browser side of the test; `call(name, *args)` runs an async action in the test's trio loop."""
    seen: dict = {"prompts": 0, "page_errors": []}
    with chromium_page(shots) as page:

        def on_dialog(dialog):
            seen["prompts"] += 1
            dialog.accept(KEY)

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda exc: seen["page_errors"].append(str(exc)))
        page.goto(url + "/ui")

        # Live gauge: idle, then one slot busy while a 1.5 s task started from the page runs.
        page.wait_for_selector("#conn.ok")  # the WebSocket is open
        page.wait_for_selector(_gauge(0))
        page.select_option("#run-function", "sleep")
        page.fill("#run-input", '{"ms": 1500}')
        page.click("#run-form button")
        page.wait_for_selector(_gauge(1), timeout=5_000)
        page.wait_for_selector('#recent-tasks tr[data-status="running"]', timeout=5_000)
        page.wait_for_selector(_gauge(0), timeout=10_000)
        page.wait_for_selector('#recent-tasks tr[data-status="completed"]', timeout=10_000)
        page.wait_for_function("() => document.querySelector('#run-result').textContent.startsWith('completed')")
        assert "sleep" in page.locator("#outcomes").inner_text()
        # Both bars of a gauge say what they show.
        gauge = page.locator('.gauge[data-worker="worker-01"]')
        seen["bar_names"] = gauge.locator(".bar-name").all_inner_texts()
        seen["bar_labels"] = [b.get_attribute("aria-label") for b in gauge.locator(".bar").all()]

        # A task too short to be seen running (sent by another client) is listed as settled.
        quick_id = call("run_quick_task")
        page.wait_for_selector(f'#recent-tasks tr[data-task="{quick_id}"][data-status="completed"]', timeout=10_000)
        seen["recent_empty"] = page.locator("#recent-empty").text_content()
        page.wait_for_function(_points("#chart-slots"))

        # A bounded job reaches Completed with every table's bar full.
        job_id = call("create_job", 1999)  # ends on the grid: the continuous job below rewrites its files
        job = page.locator(f'.job[data-job="{job_id}"]')
        page.wait_for_selector(f'.job[data-job="{job_id}"][data-status="Completed"]', timeout=30_000)
        seen["job_tables"] = job.locator(".table-row").count()
        seen["job_bars"] = [b.get_attribute("data-pct") for b in job.locator(".bar").all()]
        assert job.locator("button").count() == 0  # no stop button on a terminal job

        # A continuous job is stopped with its button.
        running_id = call("create_job", None)
        button = page.locator(f'.job[data-job="{running_id}"] button')
        button.click()
        page.wait_for_selector(f'.job[data-job="{running_id}"][data-status="Stopped"]', timeout=15_000)

        # Registry panels: charts with points once the registry reports stats, else a notice.
        if call("registry_available"):
            page.wait_for_selector('#workers tr[data-worker="worker-01"]')
            page.wait_for_function(_points("#chart-cpu"), timeout=30_000)
            page.wait_for_function(_points("#chart-activity"), timeout=30_000)
            seen["stats_charts"] = True
        else:
            page.wait_for_function("() => document.querySelector('#stats-empty').textContent.includes('not available')")
            seen["stats_charts"] = False

        page.screenshot(path=str(shots / "dashboard-1280x800.png"), full_page=True)
        seen["wide_overflow"] = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        page.set_viewport_size({"width": 390, "height": 800})
        page.wait_for_timeout(200)  # one layout pass
        seen["narrow_overflow"] = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        page.screenshot(path=str(shots / "dashboard-390x800.png"), full_page=True)
    return seen


async def test_dashboard_shows_slots_tasks_jobs_and_charts(server_factory, tmp_path):
    srv = await server_factory(auth={"api_key": KEY}, jobs={"continuous_blocks_per_s": 200.0})
    client = srv.client

    async def create_job(end_block):
        r = await client.post("/jobs", json={"dataset": "example/blocks@1.0.0", "start_block": 0, "end_block": end_block})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def registry_available():
        r = await client.post("/workers.get_stats", json={
            "from_date": 0, "to_date": 1, "interval": 1, "items": [{"key": "cpu_usage", "aggregation": "avg"}]})
        return r.status_code != 404

    async def run_quick_task():
        r = await client.post("/task", json={"function": "echo", "input": {"quick": True}, "contract": 1})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    actions = {"create_job": create_job, "registry_available": registry_available, "run_quick_task": run_quick_task}

    def call(name, *args):
        return trio.from_thread.run(actions[name], *args)

    seen = await trio.to_thread.run_sync(browse, srv.url, tmp_path, call)

    assert seen["prompts"] == 1  # asked once, then kept in sessionStorage
    assert seen["page_errors"] == []
    assert seen["job_tables"] == 2 and seen["job_bars"] == ["100", "100"]
    assert seen["bar_names"] == ["slots", "queue"]
    assert seen["bar_labels"] == ["slots: 0 / 10 busy", "queue: 0 queued"]
    assert seen["recent_empty"] == ""
    assert seen["wide_overflow"] <= 0 and seen["narrow_overflow"] <= 0
    assert (tmp_path / "dashboard-1280x800.png").stat().st_size > 10_000
    assert (tmp_path / "dashboard-390x800.png").exists()


async def test_page_shell_is_public_and_data_needs_the_key(server_factory):
    srv = await server_factory(auth={"api_key": KEY})
    bare = {"Authorization": "nope"}
    for path in ("/", "/ui", "/ui/static/dashboard.js", "/ui/static/dashboard.css"):
        r = await srv.client.get(path, headers=bare)
        assert r.status_code == 200, path
    assert "text/html" in (await srv.client.get("/")).headers["content-type"]
    assert (await srv.client.get("/ui/static/../routes.py", headers=bare)).status_code == 404
    assert (await srv.client.get("/ui/static/nothing.js", headers=bare)).status_code == 404
    assert (await srv.client.get("/ui/api/overview", headers=bare)).status_code == 401
    overview = (await srv.client.get("/ui/api/overview")).json()
    assert overview["workers"][0] == {"worker": "worker-01", "total": 10, "free": 10, "queued": 0, "maintenance": False}


# Reporting API answers shaped as API.md "Registry reporting API" says (meta/data envelope).
NOW = 1_790_000_000
STATS = {"workers": [
    {"worker": "worker-01", "metrics": [
        {"metric": "cpu_usage", "dates": [NOW - 20, NOW - 15, NOW - 10],
         "stats": [{"aggregation": "avg", "values": [10.0, 35.5, 20.0]}]},
        {"metric": "memory_used", "dates": [NOW - 20, NOW - 10],
         "stats": [{"aggregation": "avg", "values": [1536.0, 1638.4]}]}]},  # MiB, as agents report it
    {"worker": "remote-7", "metrics": [
        {"metric": "cpu_usage", "dates": [NOW - 15, NOW - 10],
         "stats": [{"category": "avg", "values": [80.0, 90.0]}]}]}]}
ACTIVITY = {"total": {"dates": [NOW - 20, NOW - 10], "counts": [2, 2]},
            "active": {"dates": [NOW - 10], "counts": [1]}}
WORKERS = {"workers": [{"node_id": "remote-7", "heartbeat_at": "2020-01-01T00:00:00.000000Z"}]}


def check_charts(url: str, shots: Path) -> dict:
    def envelope(data):
        return json.dumps({"meta": {"result_code": 200, "result_msg": "OK"}, "data": data})

    with chromium_page(shots) as page:
        page.route("**/workers.get_stats", lambda route: route.fulfill(
            status=200, content_type="application/json", body=envelope(STATS)))
        page.route("**/workers.get_activity_report", lambda route: route.fulfill(
            status=200, content_type="application/json", body=envelope(ACTIVITY)))
        page.route("**/workers", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(WORKERS)))
        page.goto(url + "/")
        page.wait_for_function(_points("#chart-activity"))
        page.screenshot(path=str(shots / "charts.png"), full_page=True)
        return {
            "points": {name: page.eval_on_selector(f"#chart-{name}", "e => Number(e.dataset.points)")
                       for name in ("cpu", "memory", "activity")},
            "cpu_lines": page.locator("#chart-cpu polyline").count(),
            "memory_axis": page.locator("#chart-memory svg text").all_text_contents(),
            "memory_title": page.locator("#chart-memory .title").inner_text(),
            "worker_row": page.locator('#workers tr[data-worker="remote-7"]').inner_text(),
        }


async def test_charts_draw_the_reporting_api_shapes(server, tmp_path):
    seen = await trio.to_thread.run_sync(check_charts, server.url, tmp_path)
    assert seen["points"] == {"cpu": 5, "memory": 2, "activity": 3}
    assert seen["cpu_lines"] == 2  # one line per worker
    assert seen["memory_axis"][:2] == ["1.6 GiB", "0 MiB"] and "MiB" in seen["memory_title"], seen
    assert "remote-7" in seen["worker_row"] and "min ago" in seen["worker_row"]


def check_polling_fallback(url: str, shots: Path, key: str) -> dict:
    with chromium_page(shots) as page:
        page.on("dialog", lambda dialog: dialog.accept(key))
        page.goto(url + "/ui")
        page.wait_for_selector(_gauge(0))
        return {"conn": page.locator("#conn").inner_text()}


async def test_gauges_poll_when_the_key_cannot_be_a_subprotocol(server_factory, tmp_path):
    key = "two words"  # a space is not allowed in a WebSocket subprotocol
    srv = await server_factory(auth={"api_key": key})
    seen = await trio.to_thread.run_sync(check_polling_fallback, srv.url, tmp_path, key)
    assert seen["conn"].startswith("polling")
