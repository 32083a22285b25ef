"""`amp-runtime bench` in-process and against a running server (figures are not asserted)."""

import json
import signal

from ..helpers import run_cli, spawn_server


async def test_bench_in_process_prints_json():
    code, out = await run_cli("bench", "--tasks", "200", "--concurrency", "5", "--json", timeout=60)
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"] == 200 and summary["errors"] == 0 and summary["per_s"] > 0
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]


async def test_bench_batch_counts_each_task_of_each_batch():
    code, out = await run_cli("bench", "--batch", "50", "--tasks", "200", "--concurrency", "2", "--json", timeout=60)
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["mode"] == "batch" and summary["ok"] == 200 and summary["ok_batches"] == 4
    assert summary["errors"] == 0 and summary["per_s"] > 0


async def test_bench_against_a_running_server_each_mode(nursery, tmp_path):
    server = await spawn_server(nursery, tmp_path / "d", env={"AMP_WEBHOOK_ALLOW_PRIVATE": "true"})
    for mode, function in (("sync", "echo"), ("stream", "count"), ("webhook", "echo")):
        code, out = await run_cli("bench", "--url", server.url, "--mode", mode, "--function", function,
                                  "--tasks", "100", "--concurrency", "4", "--json", timeout=60)
        assert code == 0, out
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["ok"] == 100 and summary["mode"] == mode
        if mode == "stream":
            assert summary["first_event_p50_ms"] is not None
        if mode == "webhook":
            assert summary["events_per_s"] > 0  # completed deliveries/s
    code, out = await run_cli("bench", "--url", server.url, "--tasks", "50", "--concurrency", "2", timeout=60)
    assert code == 0 and "tasks/s" in out and "p99 ms" in out, out  # the table
    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0
