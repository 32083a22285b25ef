"""`[webhook] signing_key`: every delivery attempt carries `X-Amp-Signature`, and the receiver
check the README documents (run here verbatim, read out of README.md) accepts exactly those."""

import hashlib
import hmac
import re
import time
from pathlib import Path

import msgspec

from ..helpers import wait_until
from . import fns  # noqa: F401  (test functions)
from .receiver import serve_webhooks

KEY = "whsec-test-key"
README = Path(__file__).parents[2] / "README.md"


def readme_verifier():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- webhook-signature-check:[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert block, "README.md lost its signature check block"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102  (our own README)
    return namespace["verify_amp_signature"]


async def flaky_receiver(nursery):
    """Answers each task's first attempt 500 (so a retry is signed too), later ones 200."""
    calls: list[tuple[dict[str, list[str]], bytes]] = []

    def answer(scope, body: bytes) -> int:
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        calls.append((headers, body))
        return 500 if headers["x-amp-delivery-attempt"] == ["1"] else 200

    return await serve_webhooks(nursery, answer), calls


async def submit(client, url, headers=None):
    r = await client.post("/task", json={"function": "echo", "input": {"x": 1}, "contract": 1, "mode": "webhook",
                                         "webhook": {"url": url, "headers": headers or {}}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


async def test_every_attempt_is_signed_and_the_readme_check_accepts_only_those(server_factory, nursery):
    verify = readme_verifier()
    url, calls = await flaky_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True, "base_delay_s": 0.01, "attempts": 3,
                                        "signing_key": KEY})
    ids = {await submit(srv.client, url), await submit(srv.client, url, {"X-Amp-Signature": "t=1,v1=forged"})}
    await wait_until(lambda: len(calls) == 4, timeout=15)
    assert {msgspec.json.decode(body)["id"] for _, body in calls} == ids
    for headers, body in calls:
        (header,) = headers["x-amp-signature"]  # the request's own forged one is dropped
        assert verify(KEY, body, header), header
        assert not verify("another-key", body, header)
        assert not verify(KEY, body + b" ", header)
        timestamp = re.match(r"t=(\d+),v1=[0-9a-f]{64}$", header).group(1)
        assert abs(int(timestamp) - time.time()) < 60
        old = str(int(timestamp) - 3600)
        replayed = hmac.new(KEY.encode(), old.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert not verify(KEY, body, f"t={old},v1={replayed}")  # validly signed, but too old
        assert not verify(KEY, body, "v1=" + header.split("v1=")[1]) and not verify(KEY, body, "")
        assert not verify(KEY, body, f"t={timestamp},v1=\u00e9") and not verify(KEY, body, "t=x,v1=0")
    for task_id in ids:
        await wait_until(lambda: _delivered(srv, task_id), timeout=10)
    await srv.client.aclose()


async def _delivered(srv, task_id) -> bool:
    return (await srv.client.get(f"/tasks/{task_id}")).json().get("webhook_status") == "delivered"


async def test_without_a_key_nothing_is_signed(server_factory, nursery):
    url, calls = await flaky_receiver(nursery)
    srv = await server_factory(webhook={"allow_private": True, "base_delay_s": 0.01})
    await submit(srv.client, url)
    await wait_until(lambda: len(calls) == 2, timeout=15)
    assert all("x-amp-signature" not in headers for headers, _ in calls)
    await srv.client.aclose()
