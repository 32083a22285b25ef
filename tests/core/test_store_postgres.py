"""What the PostgreSQL backend adds: placeholder translation, twin migrations, connecting, peers migrating at once."""

import signal
from datetime import datetime
from importlib import resources

import pytest
import trio

from amp_runtime.core.postgres import translate
from amp_runtime.core.backends import store_backend
from amp_runtime.core.store import Store, StoreError, insert_columns


@pytest.mark.parametrize("duckdb_sql, pg_sql, order", [
    ("SELECT * FROM t WHERE a = ? AND b IN (SELECT unnest(?::VARCHAR[]))",
     "SELECT * FROM t WHERE a = %s AND b IN (SELECT unnest(%s::VARCHAR[]))", None),
    ("SELECT floor(ts / $interval) * $interval FROM t WHERE ts >= $from",
     "SELECT floor(ts / %(interval)s) * %(interval)s FROM t WHERE ts >= %(from)s", None),
    ("SELECT $2, $1, $2", "SELECT %s, %s, %s", (1, 0, 1)),
    ("SELECT '?', '50%', \"a?\", x % ? -- what? $x\n", "SELECT '?', '50%', \"a?\", x %% %s -- what? $x\n", None),
])
def test_duckdb_placeholders_become_psycopg_ones(duckdb_sql, pg_sql, order):
    assert translate(duckdb_sql) == (pg_sql, order)


def test_mixed_placeholder_styles_are_refused():
    with pytest.raises(ValueError, match="one placeholder style"):
        translate("SELECT ? + $a")


def _migration_numbers(package: str) -> dict[int, str]:
    return {
        int(entry.name[:4]): entry.name
        for entry in resources.files(package).iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    }


def test_every_duckdb_migration_has_a_postgresql_twin():
    duckdb_side = _migration_numbers("amp_runtime.migrations")
    postgres_side = _migration_numbers("amp_runtime.migrations.postgres")
    assert postgres_side == duckdb_side, "write amp_runtime/migrations/postgres/NNNN_*.sql for each new migration"


async def _columns(url: str, tmp_path) -> dict[str, list[str]]:
    store = Store(store_backend(url, tmp_path / "cols.duckdb"))
    await store.open()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.run)
        rows = await store.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema IN ('main', 'public') ORDER BY table_name, ordinal_position"
        )
        store.close()
    await store.close_connection()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return tables


async def test_both_backends_have_the_same_tables_and_columns(tmp_path, pg_url):
    on_duckdb = await _columns("", tmp_path)
    on_postgres = await _columns(pg_url, tmp_path)
    on_postgres["job_transitions"].remove("rowid")  # DuckDB's rowid is implicit
    assert on_postgres == on_duckdb


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
async def test_batched_rows_keep_arrays_nulls_bytes_and_timestamps(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url") if backend == "postgres" else ""
    store = Store(store_backend(url, tmp_path / "rows.duckdb"))
    await store.open()
    blob = "BYTEA" if url else "BLOB"
    at = datetime(2026, 12, 1, 12, 30, 15, 123456)
    rows = [(1, ["a", "b,c"], None, b"\x00\xff", at, True), (2, [], "x", b"", at, False)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.run)
        await store.write(lambda c: c.execute(
            f"CREATE TABLE r (k BIGINT, tags VARCHAR[], note VARCHAR, data {blob}, seen TIMESTAMP, ok BOOLEAN)"
        ))
        await store.write(lambda c: insert_columns(c, "r", ("k", "tags", "note", "data", "seen", "ok"), rows))
        back = await store.execute("SELECT k, tags, note, data, seen, ok FROM r ORDER BY k")
        store.close()
    await store.close_connection()
    assert [(k, list(t), n, bytes(d), a, o) for k, t, n, d, a, o in back] == rows


async def test_peers_starting_together_migrate_once(tmp_path, pg_url):
    stores = [Store(store_backend(pg_url, tmp_path / "unused.duckdb")) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for store in stores:
            nursery.start_soon(store.open)
    applied = sorted(len(store.applied_migrations) for store in stores)
    assert applied[:2] == [0, 0] and applied[2] > 0  # one migrated; the others waited and found it done
    for store in stores:
        await store.close_connection()


async def test_an_unreachable_server_is_a_store_error_without_the_password(tmp_path):
    url = "postgresql://amp:s3cret@127.0.0.1:1/amp"  # port 1: nothing listens
    with pytest.raises(StoreError, match=r"cannot connect to the store postgresql://amp:\*\*\*@127\.0\.0\.1:1/amp") as caught:
        await Store(store_backend(url, tmp_path / "unused.duckdb")).open()
    assert "s3cret" not in str(caught.value)


async def test_a_server_on_postgresql_never_prints_the_password(nursery, tmp_path, pg_url):
    from ..helpers import spawn_server, wait_until

    url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@")  # trust auth ignores it
    proc = await spawn_server(nursery, tmp_path / "d", env={"AMP_STORE_URL": url, "AMP_LOG_LEVEL": "debug"})
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    await wait_until(lambda: b"store postgresql://postgres:***@127.0.0.1" in proc.output, timeout=10)
    assert b"s3cret-pw" not in proc.output


async def test_serve_on_an_unreachable_store_exits_2_with_one_masked_line(tmp_path):
    from ..helpers import run_cli

    env = {"AMP_STORE_URL": "postgresql://amp:s3cret@127.0.0.1:1/amp"}
    code, output = await run_cli("serve", "--bind", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), env=env)
    assert code == 2
    assert "cannot connect to the store postgresql://amp:***@127.0.0.1:1/amp" in output
    assert "s3cret" not in output and "Traceback" not in output


async def test_a_role_that_cannot_create_tables_is_a_store_error(tmp_path, pg_url):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE ROLE amp_reader LOGIN")  # PostgreSQL 15+: no CREATE on schema public
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    reader_url = pg_url.replace("postgresql://postgres@", "postgresql://amp_reader:pw@")
    try:
        with pytest.raises(StoreError, match=r"cannot migrate the store postgresql://amp_reader:\*\*\*@.*permission denied"):
            await Store(store_backend(reader_url, tmp_path / "unused.duckdb")).open()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("DROP OWNED BY amp_reader")
            admin.execute("DROP ROLE amp_reader")
