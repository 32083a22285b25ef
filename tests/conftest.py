import inspect
import re

import pytest

from .helpers import start_server


def _with_test_store(request, sections: dict) -> dict:
    """A test marked `on_both_stores` (it uses `store_url`) runs its servers on that store."""
    url = request.getfixturevalue("store_url") if "store_url" in request.fixturenames else ""
    if not url:
        return sections
    return {**sections, "store": {**sections.get("store", {}), "url": url}}


@pytest.fixture
async def server(nursery, tmp_path, request):
    """A runtime on 127.0.0.1:0 with default config and a private data dir."""
    srv = await start_server(nursery, tmp_path / "data", **_with_test_store(request, {}))
    yield srv
    await srv.client.aclose()
    await srv.stop()


@pytest.fixture
def server_factory(nursery, tmp_path, request):
    """`await server_factory(tasks={...}, workers=[...])` for a runtime with config overrides."""
    started = []

    async def make(**sections):
        srv = await start_server(nursery, tmp_path / f"data{len(started)}", **_with_test_store(request, sections))
        started.append(srv)
        return srv

    return make


from .pg import any_store, own_pg_server, pg_server, pg_url, store_url  # noqa: E402,F401  (fixtures: a throwaway PostgreSQL)


# The fast tier (`./dev test -m "not system"`) leaves out what starts processes or servers of
# its own: a test is `system` when it uses the PostgreSQL fixtures (or the PostgreSQL half of
# `store_url`), when its module is marked so (browsers, the binary, fuzzing, crash runs), or when
# its own body calls what spawns (the names below).
SYSTEM_FIXTURES = {"pg_url", "pg_server"}
SPAWNS = re.compile(r"\b(spawn_server|run_cli|run_process|open_process|subprocess|start_peers?|spawn_peers?|"
                    r"process_pool_size|PeerGroup|peer_group)\b")


def pytest_collection_modifyitems(items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("store_url") == "postgres"
        if on_postgres or SYSTEM_FIXTURES & set(item.fixturenames) or _spawns(item):
            item.add_marker(pytest.mark.system)


def _spawns(item) -> bool:
    function = getattr(item, "function", None)
    try:
        return function is not None and SPAWNS.search(inspect.getsource(function)) is not None
    except (OSError, TypeError):
        return False
