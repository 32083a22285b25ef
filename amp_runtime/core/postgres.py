"""The PostgreSQL store backend: one sync psycopg 3 connection, driven on the store's thread.

psycopg's async mode is asyncio-only, so the Store's own thread drives a plain connection in
autocommit mode; the Store's group commit sends BEGIN/COMMIT itself, exactly as on DuckDB.
Store functions are written once with DuckDB's placeholders (`?`, `$1`, `$name`);
`PgConnection.execute` rewrites them to psycopg's (`%s`, `%(name)s`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping, Sequence

import psycopg

from ..config import masked_url
from .store import StoreError, apply_migrations

MIGRATIONS = "amp_runtime.migrations.postgres"
# Peers starting together on one database: one migrates, the others wait and find it done.
MIGRATION_LOCK_KEY = 0x616D705F6D6967  # "amp_mig"
CONNECT_TIMEOUT_S = 10

# Quoted text and comments are copied as they are; placeholders and `%` are rewritten.
_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|\?|\$(\d+)|\$([A-Za-z_]\w*)|%""")


@lru_cache(maxsize=2048)
def translate(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """DuckDB placeholders -> psycopg's. Returns the query and, for `$n`, the order to pass
    the positional parameters in (`$n` may repeat or come out of order; `%s` may not)."""
    out: list[str] = []
    order: list[int] = []
    styles: set[str] = set()
    pos = 0
    for match in _TOKEN.finditer(sql):
        token = match.group(0)
        out.append(sql[pos:match.start()])
        pos = match.end()
        if token == "?":
            styles.add("?")
            out.append("%s")
        elif match.group(1):
            styles.add("$n")
            order.append(int(match.group(1)) - 1)
            out.append("%s")
        elif match.group(2):
            styles.add("$name")
            out.append(f"%({match.group(2)})s")
        elif token == "%":
            out.append("%%")
        else:
            out.append(token)
    out.append(sql[pos:])
    if len(styles) > 1:
        raise ValueError(f"one placeholder style per statement, got {sorted(styles)}: {sql[:80]}")
    return "".join(out), (tuple(order) if "$n" in styles else None)


class PgConnection:
    """A psycopg connection that takes DuckDB-style statements; what store functions receive.

    Used by the store's thread only (like the DuckDB connection it stands in for)."""

    def __init__(self, raw: psycopg.Connection):
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> psycopg.Cursor:
        if params is None:
            return self.raw.execute(sql)  # sent as is: may hold several statements (migrations)
        query, order = translate(sql)
        if order is not None:
            params = [params[i] for i in order]
        return self.raw.execute(query, params)

    def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """Many rows in one COPY: PostgreSQL's fastest insert (and arrays of arrays stay rows)."""
        with self.raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        self.raw.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresBackend:
    """A shared PostgreSQL database, given by `[store] url`; the URL is logged masked."""

    name = "postgres"

    def __init__(self, url: str):
        self.url = url

    def describe(self) -> str:
        return masked_url(self.url)

    def connect(self) -> PgConnection:
        try:
            raw = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="amp-runtime"
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the store {self.describe()}: {_first_line(exc)}") from None
        return PgConnection(raw)

    def migrate(self, conn: PgConnection) -> list[int]:
        try:
            conn.execute("SELECT pg_advisory_lock(?)", [MIGRATION_LOCK_KEY])
            try:
                return apply_migrations(conn, MIGRATIONS)
            finally:
                conn.execute("SELECT pg_advisory_unlock(?)", [MIGRATION_LOCK_KEY])
        except psycopg.Error as exc:  # e.g. a role without CREATE on the schema: one line, not a traceback
            conn.close()
            raise StoreError(f"cannot migrate the store {self.describe()}: {_first_line(exc)}") from None

    def close(self, conn: PgConnection) -> None:
        conn.close()  # nothing to checkpoint: every commit is already durable on the server


__all__ = ["PostgresBackend", "PgConnection", "translate"]
