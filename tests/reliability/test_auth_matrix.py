"""Auth matrix: every operation the server documents in its own `/openapi`, with a key configured,
asked with no header, a wrong key and the right key (raw and as a Bearer token).

The table is the server's document itself, fetched at test time, so a route added later is
covered without touching this file. A public operation is one without `security`.
"""

from __future__ import annotations

import inspect
import re

import httpx
import pytest

from amp_runtime.core import http as core_http

KEY = "k"

# Operations allowed to be public (API.md "Auth", plus the dashboard's page and assets, whose
# data calls are keyed). Anything else without `security` is an auth hole.
ALLOWED_PUBLIC = {
    ("get", "/health"),
    ("get", "/ready"),  # a load balancer's probe: says ready or why not, nothing more
    ("get", "/openapi"),
    ("get", "/docs"),
    ("get", "/docs/static/{name}"),
    ("get", "/auth.login"),
    ("post", "/auth.login"),
    ("get", "/ui"),
    ("get", "/ui/static/{name}"),
}

# Public operations that take their own credentials (HTTP Basic): the API key neither opens nor
# closes them, so their 401 is theirs, not the API key's.
OWN_CREDENTIALS = {("get", "/auth.login"), ("post", "/auth.login")}

NO_KEY: dict[str, str] = {}
WRONG_KEYS = [{"Authorization": "wrong"}, {"Authorization": "Bearer \u00e9t\u00e9".encode()}, {"Authorization": "Bearer wrong"}, {"Authorization": ""},
              {"Authorization": "Basic k"}, {"Authorization": "k2"}, {"Authorization": "Bearer  x"}]
RIGHT_KEYS = [{"Authorization": KEY}, {"Authorization": f"Bearer {KEY}"}]

_PARAM = re.compile(r"\{[^}]+\}")


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


async def call(client: httpx.AsyncClient, method: str, path: str, op: dict, headers: dict) -> httpx.Response:
    """One request with harmless inputs: path params "x", a `{}` body where one is declared."""
    url = _PARAM.sub("x", path)
    kwargs: dict = {"headers": headers}
    if "requestBody" in op:
        kwargs["json"] = {}
    # A fresh client without the fixture's default Authorization header.
    return await client.request(method.upper(), url, **kwargs)


async def keyed_server(server_factory):
    srv = await server_factory(auth={"api_key": KEY})
    bare = httpx.AsyncClient(base_url=srv.url, timeout=30)
    spec = (await bare.get("/openapi")).json()
    return srv, bare, spec


async def test_every_operation_against_no_wrong_and_right_key(server_factory):
    srv, bare, spec = await keyed_server(server_factory)
    ops = operations(spec)
    assert len(ops) >= 10, "the /openapi document lists too few operations"
    wrong: list[str] = []
    for method, path, op in ops:
        public = "security" not in op
        for headers in [NO_KEY, *WRONG_KEYS]:
            response = await call(bare, method, path, op, headers)
            if response.status_code >= 500:
                wrong.append(f"{method.upper()} {path} answered {response.status_code} with {headers}: "
                             f"{response.text[:200]}")
            elif public and response.status_code == 401 and (method, path) not in OWN_CREDENTIALS:
                wrong.append(f"{method.upper()} {path} is public but answered 401 with {headers}")
            if not public and response.status_code != 401:
                wrong.append(f"{method.upper()} {path} answered {response.status_code} with {headers}, want 401")
    # The right key last: it may change state (POST /off), which the wrong keys must not.
    for method, path, op in ops:
        for headers in RIGHT_KEYS:
            response = await call(bare, method, path, op, headers)
            refused = response.status_code == 401 and (method, path) not in OWN_CREDENTIALS
            if refused or response.status_code >= 500:
                wrong.append(f"{method.upper()} {path} answered {response.status_code} with the right key "
                             f"{headers}: {response.text[:200]}")
    await bare.aclose()
    assert not wrong, "\n".join(wrong)


async def test_only_allowed_operations_are_public(server_factory):
    srv, bare, spec = await keyed_server(server_factory)
    public = {(m, p) for m, p, op in operations(spec) if "security" not in op}
    assert public <= ALLOWED_PUBLIC, f"unexpected public operations: {sorted(public - ALLOWED_PUBLIC)}"
    await bare.aclose()


async def test_401_bodies_are_the_family_error_shape(server_factory):
    """A 401 is a JSON error body, never an HTML page or a traceback."""
    srv, bare, spec = await keyed_server(server_factory)
    for method, path, op in operations(spec):
        if "security" in op:
            response = await call(bare, method, path, op, NO_KEY)
            assert response.headers["content-type"].startswith("application/json"), (method, path)
            body = response.json()
            assert body and isinstance(body, dict), (method, path, body)
            assert "Traceback" not in response.text
    await bare.aclose()


async def test_every_secured_operation_documents_401(server_factory):
    srv, bare, spec = await keyed_server(server_factory)
    missing = [f"{m.upper()} {p}" for m, p, op in operations(spec)
               if "security" in op and "401" not in op["responses"]]
    await bare.aclose()
    assert not missing, f"secured operations without a documented 401: {missing}"


async def test_401_comes_before_side_effects(server_factory):
    srv, bare, spec = await keyed_server(server_factory)
    keyed = {"Authorization": KEY}
    documented = {(m, p) for m, p, _ in operations(spec)}

    # Maintenance stays off.
    for headers in [NO_KEY, {"Authorization": "wrong"}]:
        assert (await bare.post("/off", headers=headers)).status_code == 401
    assert (await bare.get("/health")).json()["status"] == "ok"

    # No task is queued or run.
    before = (await bare.get("/health", headers=keyed)).json()
    response = await bare.post("/task", json={"function": "sleep", "input": {"ms": 2000}, "contract": 1,
                                              "mode": "webhook", "webhook": {"url": "http://127.0.0.1:9/x"}})
    assert response.status_code == 401
    after = (await bare.get("/health", headers=keyed)).json()
    assert after["slots"]["busy"] == before["slots"]["busy"] == 0 and after["queued"] == 0

    if ("post", "/jobs") in documented:
        body = {"dataset": "example/blocks@1.0.0", "start_block": 0, "end_block": 10}
        assert (await bare.post("/jobs", json=body)).status_code == 401
        assert (await bare.post("/jobs", json=body, headers={"Authorization": "Bearer wrong"})).status_code == 401
        listed = (await bare.get("/jobs", params={"status": "all"}, headers=keyed)).json()
        assert listed["jobs"] == []

        created = await bare.post("/jobs", json=body, headers=keyed)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert (await bare.put(f"/jobs/{job_id}/stop")).status_code == 401
        assert (await bare.delete(f"/jobs/{job_id}")).status_code == 401
        assert (await bare.delete("/jobs", params={"status": "terminal"})).status_code == 401
        assert (await bare.get(f"/jobs/{job_id}", headers=keyed)).status_code == 200

    if ("post", "/v1/templates/{template_id}/workers") in documented:
        url = "/v1/templates/counter/workers"
        assert (await bare.post(url, json={"name": "nokey"})).status_code == 401
        assert (await bare.get(f"{url}/nokey", headers=keyed)).status_code == 404
    await bare.aclose()


async def test_401_before_registration(server_factory):
    srv, bare, spec = await keyed_server(server_factory)
    keyed = {"Authorization": KEY}
    for path in ["/workers.register", "/v2.23/workers.register"]:
        response = await bare.post(path, json={"worker": "sneaky-01"}, headers={"Authorization": "wrong"})
        assert response.status_code == 401
    assert (await bare.get("/workers/sneaky-01", headers=keyed)).status_code == 404
    # Version-prefixed aliases are not in /openapi; they must be keyed all the same.
    assert (await bare.post("/v2.23/workers.get_all", json={})).status_code == 401
    assert (await bare.post("/v2.23/workers.get_all", json={}, headers=keyed)).status_code == 200
    await bare.aclose()


async def test_websocket_slots_needs_the_key(server_factory):
    from trio_websocket import ConnectionRejected, HandshakeError, open_websocket_url

    srv = await server_factory(auth={"api_key": KEY})
    ws_url = srv.url.replace("http://", "ws://") + "/ws/slots"
    with pytest.raises((ConnectionRejected, HandshakeError)):
        async with open_websocket_url(ws_url) as ws:
            await ws.get_message()
    with pytest.raises((ConnectionRejected, HandshakeError)):
        async with open_websocket_url(ws_url, extra_headers=[("Authorization", "wrong")]) as ws:
            await ws.get_message()
    with pytest.raises((ConnectionRejected, HandshakeError)):
        async with open_websocket_url(ws_url, subprotocols=["wrong"]) as ws:
            await ws.get_message()
    async with open_websocket_url(ws_url, extra_headers=[("Authorization", KEY)]) as ws:
        assert "free" in await ws.get_message()
    async with open_websocket_url(ws_url, subprotocols=[KEY]) as ws:  # browsers: the key as subprotocol
        assert "free" in await ws.get_message()


def test_key_comparison_is_constant_time():
    source = inspect.getsource(core_http.key_matches)
    assert "hmac.compare_digest" in source
    assert "==" not in source.split('"""')[-1], "key_matches must not fall back to =="
    assert core_http.key_matches("k", "k")
    assert not core_http.key_matches("K", "k")
    assert not core_http.key_matches(None, "k")
    assert not core_http.key_matches("", "k")
    assert core_http.key_matches("clé-ü", "clé-ü")  # non-ASCII keys compare as bytes, no TypeError
    assert core_http.presented_credential("Bearer k") == "k"
    assert core_http.presented_credential("k") == "k"


def _jwt(payload: dict, secret: str, alg: str = "HS256") -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f'{b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())}.{b64(json.dumps(payload).encode())}'
    if alg == "none":
        return signing_input + "."
    return f"{signing_input}.{b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())}"


async def test_reporting_jwt_is_scoped_signed_and_expires(server_factory):
    import time

    srv = await server_factory(auth={"api_key": KEY, "jwt_secret": "sec-" + "x" * 32, "jwt_ttl_s": 60,
                                     "clients": [{"access_key": "ak", "secret_key": "sk"}]})
    bare = httpx.AsyncClient(base_url=srv.url, timeout=30)
    assert (await bare.get("/auth.login", auth=("ak", "wrong"))).status_code == 401
    assert (await bare.get("/auth.login", auth=("nobody", "sk"))).status_code == 401
    login = await bare.get("/auth.login", auth=("ak", "sk"))
    assert login.status_code == 200, login.text
    token = login.json()["data"]["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await bare.post("/workers.get_all", json={}, headers=bearer)).status_code == 200
    assert (await bare.post("/v2.23/workers.get_all", json={}, headers=bearer)).status_code == 200
    # The token belongs to the reporting family only.
    for method, path in [("POST", "/off"), ("GET", "/jobs"), ("GET", "/logs"), ("GET", "/workers")]:
        assert (await bare.request(method, path, headers=bearer)).status_code == 401, (method, path)
    now = int(time.time())
    forged = {
        "alg none": _jwt({"exp": now + 60, "iat": now, "identity": {}}, "", alg="none"),
        "other secret": _jwt({"exp": now + 60, "iat": now, "identity": {}}, "not-sec"),
        "expired": _jwt({"exp": now - 1, "iat": now - 61, "identity": {}}, "sec"),
        "no exp": _jwt({"iat": now, "identity": {}}, "sec"),
        "garbage": "a.b.c",
    }
    for why, bad in forged.items():
        response = await bare.post("/workers.get_all", json={}, headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, (why, response.status_code, response.text[:200])
    await bare.aclose()


NON_ASCII = [b"Bearer \xc3\xa9t\xc3\xa9", b"Basic \xc3\xa9t\xc3\xa9", b"Bearer \xc3\xa9.\xc3\xa9.\xc3\xa9",
             b"\xc3\xa9.\xc3\xa9.\xc3\xa9"]


async def test_non_ascii_credentials_never_500(server_factory):
    srv = await server_factory(auth={"api_key": KEY, "jwt_secret": "sec-" + "x" * 32,
                                     "clients": [{"access_key": "ak", "secret_key": "sk"}]})
    bare = httpx.AsyncClient(base_url=srv.url, timeout=30)
    spec = (await bare.get("/openapi")).json()
    wrong = []
    for method, path, op in operations(spec):
        for header in NON_ASCII:
            response = await call(bare, method, path, op, {"Authorization": header})
            if response.status_code >= 500 or ("security" in op and response.status_code != 401):
                wrong.append(f"{method.upper()} {path} with {header!r}: {response.status_code}")
    await bare.aclose()
    assert not wrong, "\n".join(wrong)
