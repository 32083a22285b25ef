"""A registry change is shown only once it is saved: a store failure answers a coded 503 and
leaves nothing listed that was never persisted."""

import pytest

from amp_runtime.registry import store as registry_sql

from ..pg import on_both_stores


def _ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [w["id"] for w in r.json()["data"]["workers"]]


@on_both_stores
async def test_a_registration_the_store_refused_is_a_503_and_is_not_listed(server, monkeypatch):
    c = server.client
    saved = registry_sql.write_batch

    def refuse(conn, *args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(registry_sql, "write_batch", refuse)
    r = await c.post("/workers.register", json={"worker": "ghost", "tags": ["t"]})
    assert r.status_code == 503, r.text
    assert r.json()["meta"]["result_code"] == 503
    assert "not applied" in r.text and "disk on fire" not in r.text
    r = await c.post("/workers.status_report", json={"worker": "ghost2", "timestamp": 1})
    assert r.status_code == 503, r.text

    for path in ("/workers/ghost", "/workers/ghost2"):
        assert (await c.get(path)).status_code == 404
    assert not {"ghost", "ghost2"} & {w["node_id"] for w in (await c.get("/workers")).json()["workers"]}
    assert not {"ghost", "ghost2"} & set(_ids(await c.post("/workers.get_all", json={"last_seen": "none"})))

    monkeypatch.setattr(registry_sql, "write_batch", saved)
    r = await c.post("/workers.register", json={"worker": "ghost", "tags": ["t"]})
    assert r.status_code == 200, r.text
    assert "ghost" in _ids(await c.post("/workers.get_all", json={"tags": ["t"]}))


@on_both_stores
@pytest.mark.parametrize("change", ["tags", "unregister"])
async def test_a_refused_change_leaves_the_saved_record_as_it_was(server, monkeypatch, change):
    c = server.client
    r = await c.post("/workers.register", json={"worker": "w1", "tags": ["old"]})
    assert r.status_code == 200, r.text

    def refuse(conn, *args):
        raise RuntimeError("store down")

    monkeypatch.setattr(registry_sql, "write_batch", refuse)
    if change == "tags":
        r = await c.post("/workers.status_report", json={"worker": "w1", "timestamp": 1, "tags": ["new"]})
    else:
        r = await c.post("/workers.unregister", json={"worker": "w1"})
    assert r.status_code == 503, r.text
    assert _ids(await c.post("/workers.get_all", json={"tags": ["old"]})) == ["w1"]
