"""An unmodified third-party client of the original reporting API (ClearML's APIClient) logs in,
registers, reports status, lists and unregisters against our server."""

from ..pg import on_both_stores
from .util import run_clearml_client


@on_both_stores
async def test_clearml_client_register_report_list_unregister(server_factory):
    srv = await server_factory(auth={"api_key": "k", "clients": [{"access_key": "ak", "secret_key": "sk"}]})
    await run_clearml_client(srv.url)
    view = (await srv.client.get("/workers/clearml-1")).json()  # the read API sees it too
    assert view["node_id"] == "clearml-1"
    await srv.client.aclose()
