"""A throwaway PostgreSQL server for the test session, started by the tests themselves.

`initdb` + `pg_ctl` in a temp dir: 127.0.0.1 on a free port, the unix socket in the same dir,
trust auth. As root, initdb refuses to run, so the server runs as the `postgres` system user
(Debian's package creates it). Each test that asks for `pg_url` gets a fresh database.
Where PostgreSQL is not installed, those tests skip (`./dev test` installs it).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest

SERVER_USER = "postgres"  # the unprivileged user that runs the server when the tests run as root


def find_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, else PATH."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One server; `create_database()` hands out a fresh database URL per test."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="amp-pg-"))
        self.data_dir = self.root / "data"
        self.port = 0
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL") from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")
        # Durability settings off: a test server dies with its temp dir anyway.
        options = (f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._options = options
        for attempt in range(3):  # the free port may be taken between probing and binding
            self.port = _free_port()
            try:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                          "-o", f"{options} -p {self.port}", "-w", "-t", "60", "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}") from None

    def restart(self) -> None:
        """`pg_ctl restart`: every session ends; the server comes back on the same port and data."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                  "-m", "fast", "-w", "-t", "60", "restart")

    def halt(self) -> None:
        """`pg_ctl stop -m fast`: every session ends and the port refuses; `resume` brings it back."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    def resume(self) -> None:
        """Start a halted server again on the same port and data."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                  "-o", f"{self._options} -p {self.port}", "-w", "-t", "60", "start")

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no server log)"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.port:
            subprocess.run([*self._as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir),
                            "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def start_pg_server() -> PostgresServer:
    """A started throwaway server; skips the test where PostgreSQL is not installed."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl); ./dev test installs it")
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def own_pg_server():
    """A server of the test's own, to stop and start (the session's is shared)."""
    server = start_pg_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server."""
    server = start_pg_server()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session's server, dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


# Marks a test whose `server` / `server_factory` / spawned servers run once on each backend.
on_both_stores = pytest.mark.usefixtures("store_url")


@pytest.fixture(params=["duckdb", "postgres"])
def store_url(request):
    """Parametrizes a test on both store backends: "" (DuckDB in the data dir) or a fresh PostgreSQL URL."""
    if request.param == "duckdb":
        return ""
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def any_store(nursery, tmp_path, store_url):
    """A running Store on each backend in turn (DuckDB file in tmp_path, or a fresh PostgreSQL database)."""
    from amp_runtime.core.backends import store_backend
    from amp_runtime.core.store import Store

    store = Store(store_backend(store_url, tmp_path / "store.duckdb"), group_commit_ms=1)
    await store.open()
    nursery.start_soon(store.run)
    yield store
    store.close()
    await store.close_connection()


@asynccontextmanager
async def peer_stores(nursery, pg_url: str, count: int = 2) -> AsyncIterator[list]:
    """`count` running Stores on one PostgreSQL database (a connection and a thread each), as
    that many peer processes have; closed on exit."""
    from amp_runtime.core.backends import store_backend
    from amp_runtime.core.store import Store

    stores = [Store(store_backend(pg_url, None), group_commit_ms=0) for _ in range(count)]
    for store in stores:
        await store.open()
        nursery.start_soon(store.run)
    try:
        yield stores
    finally:
        for store in stores:
            store.close()
            await store.close_connection()


def store_env(store_url: str) -> dict[str, str]:
    """Environment for a spawned server on that store ("" = its DuckDB file)."""
    return {"AMP_STORE_URL": store_url} if store_url else {}


@contextmanager
def direct_connection(store_url: str, data_dir: Path):
    """The store's database opened by the test itself, taking DuckDB-style SQL on both backends.
    On DuckDB the server must be stopped first (the file is locked while it runs)."""
    if store_url:
        import psycopg

        from amp_runtime.core.postgres import PgConnection

        conn = PgConnection(psycopg.connect(store_url, autocommit=True))
    else:
        import duckdb

        conn = duckdb.connect(str(data_dir / "amp_runtime.duckdb"))
    try:
        yield conn
    finally:
        conn.close()
