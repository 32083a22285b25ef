"""The coordinator/node mode is retired: `[cluster] join` without a PostgreSQL store stops
`serve` with one line saying why; on PostgreSQL it is ignored with a warning."""

from __future__ import annotations

from ..helpers import run_cli, spawn_server, wait_until


async def test_join_without_a_postgresql_store_exits_2_saying_a_cluster_runs_on_postgresql(tmp_path):
    code, output = await run_cli("serve", "--data-dir", str(tmp_path / "data"), "--bind", "127.0.0.1:0",
                                 env={"AMP_CLUSTER_JOIN": "http://127.0.0.1:1610"})
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cluster.join" in lines[0] and "a cluster runs on PostgreSQL" in lines[0], output
    assert not (tmp_path / "data" / "amp_runtime.duckdb").exists()


async def test_join_on_postgresql_is_ignored_with_a_warning(nursery, tmp_path, pg_url):
    peer = await spawn_server(nursery, tmp_path / "p", env={"AMP_STORE_URL": pg_url,
                                                             "AMP_CLUSTER_JOIN": "http://127.0.0.1:1610"}, timeout=60)
    await wait_until(lambda: b"[cluster] join is ignored" in peer.output, timeout=10)


def test_the_cluster_section_is_checked_at_load():
    import pytest

    from amp_runtime.config import ConfigError, load_config

    pg = {"AMP_STORE_URL": "postgresql://u@127.0.0.1/db"}
    assert load_config(environ={**pg, "AMP_CLUSTER_JOIN": "http://x:1"}).cluster.join == "http://x:1"
    with pytest.raises(ConfigError, match="cluster.join: .*a cluster runs on PostgreSQL"):
        load_config(environ={"AMP_CLUSTER_JOIN": "http://x:1"})
    with pytest.raises(ConfigError, match="cluster.advertise_url") as refused:
        load_config(environ={**pg, "AMP_CLUSTER_ADVERTISE_URL": "x:1", "AMP_CLUSTER_CONNECT_TIMEOUT_S": "0"})
    assert "cluster.connect_timeout_s" in str(refused.value)
