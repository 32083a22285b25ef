"""A WebSocket upgrade that is refused gets a plain HTTP answer (401 / 404), never a 500."""

from __future__ import annotations

import pytest
from trio_websocket import ConnectionRejected, open_websocket_url

KEY = "ws-test-key"


async def rejected_status(url: str, **kwargs) -> tuple[int, bytes]:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, **kwargs) as ws:
            await ws.get_message()
    return info.value.status_code, info.value.body or b""


async def test_upgrade_without_the_key_is_401(server_factory):
    srv = await server_factory(auth={"api_key": KEY})
    base = srv.url.replace("http://", "ws://")
    status, body = await rejected_status(base + "/ws/slots")
    assert status == 401, body
    assert b"Traceback" not in body
    status, _ = await rejected_status(base + "/ws/slots", extra_headers=[("Authorization", "wrong")])
    assert status == 401


@pytest.mark.parametrize("path", ["/ws/nope", "/task", "/jobs", "/v1/templates"])
async def test_upgrade_on_a_path_without_a_websocket_is_404(server_factory, path):
    srv = await server_factory()
    status, body = await rejected_status(srv.url.replace("http://", "ws://") + path)
    assert status == 404, body
    assert b"Traceback" not in body and b"Internal" not in body


async def test_a_refused_upgrade_leaves_the_server_serving(server_factory):
    srv = await server_factory(auth={"api_key": KEY})
    base = srv.url.replace("http://", "ws://")
    for path in ("/ws/nope", "/ws/slots"):
        await rejected_status(base + path)
    assert (await srv.client.get("/health")).status_code == 200
    async with open_websocket_url(base + "/ws/slots", extra_headers=[("Authorization", KEY)]) as ws:
        assert "free" in await ws.get_message()


async def test_websockets_hold_at_most_half_of_max_connections(server_factory):
    """A WebSocket nobody reads costs the server nothing to fill for hours, so no clock bounds it:
    they may take half the connections (here 2 of 4), and requests keep the rest."""
    import httpx
    import trio

    srv = await server_factory(http={"max_connections": 4})
    url = srv.url.replace("http://", "ws://") + "/ws/slots"
    async with open_websocket_url(url), open_websocket_url(url):
        status, body = await rejected_status(url)
        assert status == 503 and b"TOO_MANY_WEBSOCKETS" in body, body
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200
    with trio.fail_after(10):  # their places are given back
        async with open_websocket_url(url) as ws:
            assert await ws.get_message()
