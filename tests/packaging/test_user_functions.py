"""`[functions] paths`: the user's own module beside config.toml loads without PYTHONPATH, in
every run kind, with the installed command (`python -m amp_runtime` of the dev venv) started
from that directory. test_binary.py does the same with the binary."""

from __future__ import annotations

import os
import re
import signal

import httpx

from ..helpers import run_cli, spawn_server
from . import walkthrough

README_EXAMPLE = re.compile(r"^## Tasks\n.*?^```python\n(.*?)^```", re.S | re.M)


def scrubbed_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("AMP_")}


async def test_readme_walkthrough_runs_as_written(tmp_path, nursery):
    app = tmp_path / "app"
    app.mkdir()
    walkthrough.write_files(app)
    elsewhere = tmp_path / "elsewhere"  # started from another directory: the config file's one counts
    elsewhere.mkdir()
    server = await spawn_server(nursery, tmp_path / "data", "--config", str(app / "config.toml"),
                                cwd=elsewhere, env=scrubbed_env())
    await walkthrough.check_calls(server.url)
    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0


async def test_readme_tasks_example_loads_beside_config(tmp_path, nursery):
    example = README_EXAMPLE.search(walkthrough.README.read_text()).group(1)
    (tmp_path / "myfunctions.py").write_text(example)
    (tmp_path / "config.toml").write_text('[functions]\nmodules = ["myfunctions"]\n')
    server = await spawn_server(nursery, tmp_path / "data", "--config", "config.toml", cwd=tmp_path,
                                env=scrubbed_env())
    async with httpx.AsyncClient(base_url=server.url) as client:
        functions = (await client.get("/health")).json()["functions"]
    assert {"resize", "tokens", "crc", "render"} <= {f["name"] for f in functions}, functions
    server.send_signal(signal.SIGTERM)
    assert await server.wait() == 0


async def test_a_missing_import_is_one_line_naming_module_and_import(tmp_path):
    (tmp_path / "needs_pkg.py").write_text("import amp_runtime\nimport no_such_package_xyz\n")
    (tmp_path / "config.toml").write_text('[functions]\nmodules = ["needs_pkg"]\n')
    code, out = await run_cli("serve", "--config", "config.toml", cwd=tmp_path, env=scrubbed_env())
    assert code == 2 and out.count("\n") == 1 and "Traceback" not in out, out
    assert out == ("amp-runtime: functions.modules: 'needs_pkg' imports 'no_such_package_xyz', "
                   "but it is not installed\n")


async def test_a_module_not_found_names_the_paths(tmp_path):
    (tmp_path / "funcs").mkdir()
    (tmp_path / "config.toml").write_text('[functions]\nmodules = ["absent_mod"]\npaths = ["funcs"]\n')
    code, out = await run_cli("serve", "--config", "config.toml", cwd=tmp_path, env=scrubbed_env())
    assert code == 2 and out.count("\n") == 1, out
    assert f"no module 'absent_mod' in functions.paths ({tmp_path / 'funcs'})" in out


async def test_a_module_that_raises_is_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("raise ValueError('line one\\nline two')\n")
    (tmp_path / "config.toml").write_text('[functions]\nmodules = ["broken"]\n')
    code, out = await run_cli("serve", "--config", "config.toml", cwd=tmp_path, env=scrubbed_env())
    assert code == 2 and out == "amp-runtime: functions.modules: cannot import 'broken': ValueError: line one line two\n"
