"""Logs an operator can ship: `[log] format = "json"` writes one parseable object per line with
the task or job it concerns; `[log] file` writes to a path instead of stderr and follows
logrotate (the file moved away, the next lines go to a new file at the path)."""

from __future__ import annotations

import json
import signal

import httpx

from ..cluster.clusterutil import free_port
from ..helpers import READY, run_cli, spawn_server, wait_until
from ..jobs.jobutil import DATASET, wait_for_files

WEBHOOK_FAILS = {"AMP_WEBHOOK_ALLOW_PRIVATE": "true", "AMP_WEBHOOK_ATTEMPTS": "1"}


async def _failed_webhook_task(client: httpx.AsyncClient) -> str:
    """A webhook task whose delivery fails at once (nothing listens): its id."""
    accepted = await client.post("/task", json={"function": "echo", "contract": 1, "input": 1, "mode": "webhook",
                                                "webhook": {"url": f"http://127.0.0.1:{free_port()}/hook"}})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["id"]


async def test_json_lines_parse_and_name_their_task_and_job(nursery, tmp_path):
    env = {**WEBHOOK_FAILS, "AMP_LOG_FORMAT": "json", "AMP_JOBS_BATCH_BLOCKS": "20",
           "AMP_FUNCTIONS_MODULES": '["tests.ops.logging_fns"]'}
    server = await spawn_server(nursery, tmp_path / "d", env=env)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        task_id = await _failed_webhook_task(client)
        await wait_until(lambda: b"failed after 1 attempts" in server.output, timeout=10)
        said = {}
        for function in ("warn_loudly", "warn_loudly_async"):  # in a thread, and at once on the loop
            said[function] = await client.post("/task", json={"function": function, "contract": 1, "input": function})
            assert said[function].status_code == 200, said[function].text
        job = (await client.post("/jobs", json={"dataset": DATASET, "start_block": 0, "end_block": 19_999})).json()
        await wait_for_files(client, job["id"], 5)
    server.send_signal(signal.SIGTERM)  # the drain pauses the job: a line about it
    assert await server.wait() == 0, server.output.decode()
    lines = [line for line in server.output.decode().splitlines() if line and not READY.search(line.encode())]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records), lines
    assert all(r["time"].endswith("Z") for r in records)
    # Other loggers' warnings (user code, libraries) are shipped the same way, naming the task.
    user = [r for r in records if r["logger"] == "user_code.fns"]
    assert [(r["message"], r["task_id"]) for r in user] == [
        (f"user code says {function}", answer.json()["id"]) for function, answer in said.items()], user
    webhook = [r for r in records if "failed after 1 attempts" in r["message"]]
    assert webhook and webhook[0]["task_id"] == task_id and webhook[0]["level"] == "warning", webhook
    paused = [r for r in records if "paused at block" in r["message"]]
    assert paused and paused[0]["job_id"] == job["id"], records


async def test_a_log_file_moved_away_is_followed_by_a_new_file_at_the_path(nursery, tmp_path):
    path = tmp_path / "logs" / "amp.log"
    path.parent.mkdir()
    server = await spawn_server(nursery, tmp_path / "d", env={**WEBHOOK_FAILS, "AMP_LOG_FILE": str(path)})
    await wait_until(lambda: path.is_file() and path.stat().st_size > 0, timeout=10)  # its start-up lines
    assert b" INFO " not in server.output  # not on stderr: only the ready line is printed there
    rotated = path.with_suffix(".log.1")
    path.rename(rotated)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        task_id = await _failed_webhook_task(client)
        await wait_until(lambda: path.is_file() and task_id in path.read_text(), timeout=10)
    assert task_id not in rotated.read_text()


async def test_a_bad_log_format_or_an_unwritable_log_file_exits_2_naming_the_key(tmp_path):
    for env, key in (({"AMP_LOG_FORMAT": "xml"}, "log.format"),
                     ({"AMP_LOG_FILE": str(tmp_path / "missing" / "amp.log")}, "log.file")):
        code, output = await run_cli("serve", "--data-dir", str(tmp_path / "d"), "--bind", "127.0.0.1:0", env=env)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and key in lines[0], output
