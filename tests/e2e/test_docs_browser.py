"""/docs renders in a real headless Chromium, with every asset from the server itself."""

import shutil

import pytest
import trio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.system,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (.ci/run installs it)")]


def render_docs(url: str) -> tuple[str, list[str], list[str]]:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        title = page.inner_text(".swagger-ui .info .title")
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        browser.close()
    return title, paths, requested


async def test_docs_render_from_local_assets(server):
    title, paths, requested = await trio.to_thread.run_sync(render_docs, server.url)
    assert "amp-runtime" in title
    assert any(p.strip().startswith("/task") for p in paths)
    assert requested and all(r.startswith(server.url) for r in requested), requested
