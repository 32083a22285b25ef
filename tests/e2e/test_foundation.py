"""The foundation end to end: a real server process or an in-process one on a real socket."""

import signal

import httpx

from ..helpers import run_cli, spawn_server, wait_until


async def test_health_on_a_real_socket(server):
    r = await server.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["version"] and body["uptime_s"] >= 0


async def test_unknown_route_and_wrong_method_are_json(server):
    r = await server.client.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error_code"] == "NOT_FOUND"
    r = await server.client.delete("/health")
    assert r.status_code == 405 and r.json()["error_code"] == "METHOD_NOT_ALLOWED"


async def test_openapi_and_docs_served_locally(server):
    doc = (await server.client.get("/openapi")).json()
    assert doc["openapi"].startswith("3.1")
    page = await server.client.get("/docs")
    assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
    asset = await server.client.get("/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


async def test_version_flag():
    code, out = await run_cli("--version")
    assert code == 0 and out.startswith("amp-runtime ")


async def test_bad_config_exits_2_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nshutdown_grace_s = 'soon'\n")
    code, out = await run_cli("serve", "--config", str(bad), "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert "server.shutdown_grace_s" in out and "bad.toml" in out
    assert "Traceback" not in out


async def test_unloopback_bind_without_key_exits_2(tmp_path):
    code, out = await run_cli("serve", "--bind", "0.0.0.0:0", "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "api_key" in out and "Traceback" not in out


async def test_uncreatable_data_dir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out = await run_cli("serve", "--bind", "127.0.0.1:0", "--data-dir", str(blocker / "sub"))
    assert code == 2 and "data dir" in out and "Traceback" not in out


async def test_second_server_on_same_data_dir_exits_2(nursery, tmp_path):
    first = await spawn_server(nursery, tmp_path / "d")
    code, out = await run_cli("serve", "--bind", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "in use by another process" in out and "Traceback" not in out
    first.send_signal(signal.SIGTERM)
    assert await first.wait() == 0


async def test_kill9_then_restart_reopens_store_without_reapplying_migrations(nursery, tmp_path):
    first = await spawn_server(nursery, tmp_path / "d")
    await wait_until(lambda: b"applied migrations" in first.output, timeout=10)
    first.kill9()
    await first.wait()
    second = await spawn_server(nursery, tmp_path / "d")
    async with httpx.AsyncClient(base_url=second.url) as client:
        assert (await client.get("/health")).status_code == 200
    await wait_until(lambda: b"schema up to date" in second.output, timeout=10)
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0


async def test_sigint_exits_0(nursery, tmp_path):
    proc = await spawn_server(nursery, tmp_path / "d")
    proc.send_signal(signal.SIGINT)
    assert await proc.wait() == 0
