import pytest

from .helpers import start_server


@pytest.fixture
async def server(nursery, tmp_path):
    """A runtime on 127.0.0.1:0 with default config and a private data dir."""
    srv = await start_server(nursery, tmp_path / "data")
    yield srv
    await srv.client.aclose()
    await srv.stop()


@pytest.fixture
def server_factory(nursery, tmp_path):
    """`await server_factory(tasks={...}, workers=[...])` for a runtime with config overrides."""
    started = []

    async def make(**sections):
        srv = await start_server(nursery, tmp_path / f"data{len(started)}", **sections)
        started.append(srv)
        return srv

    return make


from .pg import any_store, pg_server, pg_url, store_url  # noqa: E402,F401  (fixtures: a throwaway PostgreSQL)
