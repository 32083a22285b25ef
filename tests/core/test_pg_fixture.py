"""The throwaway PostgreSQL server of tests/pg.py: a fresh, empty database for each test."""

import psycopg
import pytest


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_empty_database(pg_url, run):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        assert tables == 0  # the other run's table is not here
        conn.execute("CREATE TABLE t (run INTEGER)")
        conn.execute("INSERT INTO t VALUES (%s)", [run])
        assert conn.execute("SELECT run FROM t").fetchall() == [(run,)]


def test_the_server_listens_on_loopback_only(pg_server):
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
