"""`amp-runtime bench --compare`: the figure beside its ceilings (behaviour only, tiny runs)."""

import json
import re
import signal

from ..helpers import run_cli, spawn_server


async def test_compare_prints_each_figure_with_its_ratios():
    code, out = await run_cli("bench", "--compare", "--rounds", "2", "--tasks", "50", "--concurrency", "2",
                              timeout=180)
    assert code == 0, out
    for case in ("echo POST /task", "Quart-Trio POST /noop", "bare hypercorn-trio ASGI"):
        assert case in out
    assert re.search(r"vs Quart-Trio no-op .* ratio \d+\.\d+x", out), out
    assert re.search(r"vs bare hypercorn-trio ASGI .* ratio \d+\.\d+x", out), out


async def test_compare_against_a_running_server_as_json(nursery, tmp_path):
    server = await spawn_server(nursery, tmp_path / "d")
    code, out = await run_cli("bench", "--compare", "--url", server.url, "--tasks", "40", "--concurrency", "2",
                              "--json", timeout=180)
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    for part in ("task", "noop", "bare"):
        assert result[part]["ok"] == 40 and result[part]["errors"] == 0
    assert result["task"]["name"] == "echo POST /task"
    assert abs(result["task_vs_noop"] - result["task"]["per_s"] / result["noop"]["per_s"]) < 0.01
    assert abs(result["task_vs_bare"] - result["task"]["per_s"] / result["bare"]["per_s"]) < 0.01
    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0
