"""A bad config value stops `serve` with exit 2 and one line naming the key (real processes):
every value an API also checks is checked at start by the API's own rule."""

import pytest

from ..helpers import run_cli


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
