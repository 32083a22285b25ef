"""A bad config value stops `serve` with exit 2 and one line naming the key (real processes):
every value an API also checks is checked at start by the API's own rule."""

import httpx
import pytest

from ..helpers import run_cli, spawn_server


async def serve_with(tmp_path, toml: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    return await run_cli("serve", "--config", str(path), "--bind", "127.0.0.1:0",
                         "--data-dir", str(tmp_path / "d"), env=env)


def assert_one_line_exit_2(code: int, out: str, *needles: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    for needle in needles:
        assert needle in out, out


@pytest.mark.parametrize("headers, shown", [
    ('{ "X-A" = " leading" }', "X-A"),
    ('{ "X-A" = "trailing\\t" }', "X-A"),
    ('{ "X-A" = "a\\nb" }', "X-A"),
    ('{ "X Space" = "1" }', "X Space"),
    ('{ "X-Ü" = "1" }', "X-Ü"),
    ('{ "Content-Length" = "1" }', "Content-Length"),
])
async def test_unsendable_webhook_header_in_config_exits_2(tmp_path, headers, shown):
    code, out = await serve_with(tmp_path, f"[webhook]\nheaders = {headers}\n")
    assert_one_line_exit_2(code, out, "webhook.headers", shown)


@pytest.mark.parametrize("toml, key", [
    ('[[workers]]\nid = "9bad"\n', "workers[0].id"),  # the audit's reproduction: a 59-line traceback
    ('[[workers]]\nid = "ok"\n[[workers]]\nid = "has space"\n', "workers[1].id"),
    ('[[workers]]\nid = ""\n', "workers[0].id"),
    ('[[workers]]\nid = "w\\nx"\n', "workers[0].id"),
    ('[[workers]]\nid = "wörker"\n', "workers[0].id"),
    ('[http]\nmax_id_length = 8\n[[workers]]\nid = "worker-too-long"\n', "workers[0].id"),  # the API's limit
    ('[[workers]]\nid = "w"\ngroups = ["' + "g" * 300 + '"]\n', "workers[0].groups"),
    ('[http]\nmax_tags = 2\n[[workers]]\nid = "w"\ntags = ["a", "b", "c"]\n', "workers[0].tags"),
    ('[tasks]\ntags = ["' + "t" * 300 + '"]\n', "tasks.tags"),
    ('[[workers]]\nid = "w"\nslots = 100000000\n', "workers.slots"),  # the audit's: out of memory, no line
    ('[[workers]]\nid = "w"\nslots = 0\n', "workers.slots"),
])
async def test_a_value_the_api_refuses_in_config_exits_2(tmp_path, toml, key):
    code, out = await serve_with(tmp_path, toml)
    assert_one_line_exit_2(code, out, key)


async def test_an_id_the_api_takes_starts(tmp_path, nursery):
    path = tmp_path / "c.toml"
    path.write_text('[[workers]]\nid = "W.ok_1-a"\ngroups = ["default"]\n')
    server = await spawn_server(nursery, tmp_path / "d", "--config", str(path))
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/workers/W.ok_1-a")).status_code == 200
    server.kill9()
    await server.wait()


@pytest.mark.parametrize("env, needle", [
    ({"AMP_AUTH_APIKEY": "secret"}, "AMP_AUTH_APIKEY: no such key; did you mean AMP_AUTH_API_KEY?"),  # the audit's
    ({"AMP_HTTP_MAX_BODY": "10"}, "AMP_HTTP_MAX_BODY: no such key; did you mean AMP_HTTP_MAX_BODY_BYTES?"),
    ({"AMP_WEBHOOK_SIGNINGKEY": "k"}, "did you mean AMP_WEBHOOK_SIGNING_KEY?"),
    ({"AMP_WORKERS_ID": "w"}, "AMP_WORKERS_ID: no such key ([[workers]] is set in the config file only)"),
    ({"AMP_": "x"}, "AMP_: no such key"),
    ({"AMP_NOTHING_LIKE_IT_AT_ALL_QQQ": "x"}, "AMP_NOTHING_LIKE_IT_AT_ALL_QQQ: no such key"),
])
async def test_an_amp_variable_that_names_no_key_exits_2(tmp_path, env, needle):
    code, out = await serve_with(tmp_path, "", env=env)
    assert_one_line_exit_2(code, out, needle)


async def test_variables_that_name_keys_are_still_taken(tmp_path, nursery):
    env = {"AMP_AUTH_API_KEY": "k", "AMP_LOG_LEVEL": "warning", "AMP_WEBHOOK_SIGNING_KEY": "s",
           "AMP_TASKS_KEEP_RESULTS": "5"}
    server = await spawn_server(nursery, tmp_path / "d", env=env)
    server.kill9()
    await server.wait()


@pytest.mark.parametrize("toml, key", [
    ("[webhook]\nattempts = 0\n", "webhook.attempts"),  # nothing would ever be delivered
    ("[webhook]\ntimeout_s = 0\n", "webhook.timeout_s"),
    ("[webhook]\ntimeout_s = nan\n", "webhook.timeout_s"),
    ("[webhook]\nbase_delay_s = -1\n", "webhook.base_delay_s"),
    ("[webhook]\nmax_delay_s = -1\n", "webhook.max_delay_s"),
    ("[webhook]\nmax_payload_bytes = 0\n", "webhook.max_payload_bytes"),
])
async def test_a_webhook_setting_that_cannot_work_exits_2(tmp_path, toml, key):
    code, out = await serve_with(tmp_path, toml)
    assert_one_line_exit_2(code, out, key)


async def test_a_functions_path_that_does_not_exist_exits_2(tmp_path):
    code, out = await serve_with(tmp_path, '[functions]\npaths = [".", "no-such-dir"]\nmodules = []\n')
    assert_one_line_exit_2(code, out, "functions.paths", "no-such-dir")


async def test_a_jwt_secret_shorter_than_hs256_wants_exits_2(tmp_path):
    code, out = await serve_with(tmp_path, '[auth]\njwt_secret = "short"\n')
    assert_one_line_exit_2(code, out, "auth.jwt_secret", "32 bytes")
