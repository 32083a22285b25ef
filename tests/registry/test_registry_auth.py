"""auth.login → JWT bearer on the reporting API; the API key on both registry families."""

import base64
import json
import time

import httpx
import trio

from amp_runtime.registry import tokens as jwt
from tests.helpers import start_server, wait_until

KEY = "k-registry"
CLIENTS = [{"access_key": "ACCESS", "secret_key": "SECRET"}]


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_login_then_bearer(server_factory):
    srv = await server_factory(auth={"api_key": KEY, "clients": CLIENTS})
    async with httpx.AsyncClient(base_url=srv.url) as anon:
        r = await anon.get("/workers.get_all")
        assert r.status_code == 401 and r.json()["meta"]["result_code"] == 401
        r = await anon.get("/auth.login", headers={"Authorization": basic("ACCESS", "wrong")})
        assert r.status_code == 401 and r.json()["meta"]["result_code"] == 401 and r.json()["data"] == {}
        r = await anon.get("/auth.login")  # public route: no credential is a bad request, not a refusal
        assert r.status_code == 400 and r.json()["meta"]["result_code"] == 400
        r = await anon.get("/v2.23/auth.login", headers={"Authorization": basic("ACCESS", "SECRET")})
        assert r.status_code == 200, r.text
        token = r.json()["data"]["token"]
        payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert payload["api_version"] == "2.23" and payload["server_version"]
        assert payload["exp"] - payload["iat"] == 86400 and "identity" in payload
        auth = {"Authorization": f"Bearer {token}"}
        r = await anon.post("/workers.register", json={"worker": "via-token"}, headers=auth)
        assert r.status_code == 200, r.text
        r = await anon.request("GET", "/v2.20/workers.get_all", json={}, headers=auth)
        assert "via-token" in [w["id"] for w in r.json()["data"]["workers"]]
        # the token is for the reporting family only; the read API wants the key
        assert (await anon.get("/workers", headers=auth)).status_code == 401
        r = await anon.post("/workers.get_all", json={}, headers={"Authorization": "Bearer " + token[:-2] + "xx"})
        assert r.status_code == 401
        # A token (or the API key) refreshes into a new token; expiration_sec shortens its life.
        r = await anon.get("/auth.login", params={"expiration_sec": 60}, headers=auth)
        fresh = json.loads(base64.urlsafe_b64decode(r.json()["data"]["token"].split(".")[1] + "=="))
        assert fresh["exp"] - fresh["iat"] == 60 and fresh["identity"] == payload["identity"]
        r = await anon.post("/auth.login", headers={"Authorization": KEY})
        assert r.status_code == 200 and r.json()["data"]["token"].count(".") == 2
    r = await srv.client.get("/workers")
    assert "via-token" in [w["node_id"] for w in r.json()["workers"]]
    assert (await srv.client.post("/workers.get_count", json={})).json()["data"]["count"] == 2


async def test_generated_secret_survives_restart(server_factory, tmp_path):
    srv = await server_factory(auth={"api_key": KEY, "clients": CLIENTS})
    r = await srv.client.get("/auth.login", headers={"Authorization": basic("ACCESS", "SECRET")})
    token = r.json()["data"]["token"]
    secret = srv.runtime.services.registry.jwt_secret
    assert secret and jwt.decode(token, secret)
    await srv.stop()
    await wait_until(lambda: srv.runtime.store._db.conn is None, timeout=20)
    async with trio.open_nursery() as nursery:
        again = await start_server(nursery, tmp_path / "data0", auth={"api_key": KEY, "clients": CLIENTS})
        assert again.runtime.services.registry.jwt_secret == secret
        async with httpx.AsyncClient(base_url=again.url) as anon:
            r = await anon.post("/workers.get_count", json={}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        await again.client.aclose()
        await again.stop()


SECRET, OTHER = "s" * 32, "o" * 32


def test_jwt_roundtrip_and_rejections():
    token = jwt.encode({"exp": time.time() + 10, "iat": time.time()}, SECRET)
    assert jwt.decode(token, SECRET)["exp"] > time.time()
    future_iat = jwt.encode({"exp": time.time() + 10, "iat": time.time() + 30}, SECRET)  # a peer's clock ahead
    assert jwt.decode(future_iat, SECRET)
    for bad, secret in ((token, OTHER), ("a.b", SECRET), (jwt.encode({"exp": time.time() - 1}, SECRET), SECRET),
                        (jwt.encode({"iat": time.time()}, SECRET), SECRET), ("é.é.é", SECRET)):
        try:
            jwt.decode(bad, secret)
        except jwt.InvalidToken:
            continue
        raise AssertionError(f"accepted {bad}")


async def test_open_server_signs_any_login(server):
    r = await server.client.get("/auth.login", headers={"Authorization": basic("anyone", "anything")})
    assert r.status_code == 200 and r.json()["data"]["token"].count(".") == 2
    r = await server.client.get("/auth.login")
    assert r.status_code == 400  # still needs credentials (public route: a malformed request)
