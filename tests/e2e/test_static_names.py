"""Whatever name follows `/ui/static/` or `/docs/static/`, the answer is the asset, a 404 or a
400: never a 500. Sent as raw request lines, so no client normalises the path first."""

import pytest
import trio

PREFIXES = ["/ui/static/", "/docs/static/"]
HOSTILE_NAMES = [
    "a" * 300, "a" * 255 + ".js", "a" * 4000,  # longer than the OS takes for a file name
    "x%00y", "%00", "dashboard.js%00", "swagger-ui.css%00.png",  # NUL bytes
    "..", "%2e%2e", ".", "%2e", "..%2f..%2fconfig.py", "%2e%2e%2fmeta_routes.py", "..%5c..%5cx",
    "%2fetc%2fpasswd", "%2F", "",  # absolute paths, a slash, no name
    "%ff%fe", "%c3%28", "%ed%a0%80", "%f0%9f%98%80", "%0a", "%0d%0aX:%201", "%09", "%20", "%7f",
    "CON", "nul", "aux.js", ".hidden", "~", "*", "?", "dashboard.js%3f", "%25",  # odd names
]


async def raw_status(url: str, target: str) -> int:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        with trio.fail_after(10):
            while b"\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_no_static_name_gives_a_500(server, prefix):
    for name in HOSTILE_NAMES:
        status = await raw_status(server.url, prefix + name)
        assert status in (400, 404), (prefix + name, status)
    raw_bytes = (prefix + "\x80\xff.js", prefix + "\xe9t\xe9")  # bytes that are no UTF-8, unescaped
    for target in raw_bytes:
        assert await raw_status(server.url, target) in (400, 404), target
    served = "dashboard.js" if prefix == "/ui/static/" else "swagger-ui.css"
    assert await raw_status(server.url, prefix + served) == 200
    assert (await server.client.get("/health")).status_code == 200
