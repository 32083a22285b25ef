"""The PostgreSQL store backend: one sync psycopg 3 connection, driven on the store's thread.

psycopg's async mode is asyncio-only, so the Store's own thread drives a plain connection in
autocommit mode; the Store's group commit sends BEGIN/COMMIT itself, exactly as on DuckDB.
Store functions are written once with DuckDB's placeholders (`?`, `$1`, `$name`);
`PgConnection.execute` rewrites them to psycopg's (`%s`, `%(name)s`).
"""

from __future__ import annotations

import logging
import re
import time
from functools import lru_cache
from typing import Any, Mapping, Sequence

import psycopg
import psycopg.conninfo

from .database import StoreError, WorkerIdClaimed, advisory_key, apply_migrations
from .secrets import masked_url

log = logging.getLogger("amp_runtime.store")

MIGRATIONS = "amp_runtime.migrations.postgres"
# Peers starting together on one database: one migrates, the others wait and find it done.
MIGRATION_LOCK_KEY = 0x616D705F6D6967  # "amp_mig"
CONNECT_TIMEOUT_S = 10
# A server that vanished without closing the socket (host down, partition) is noticed in ~10 s,
# not after the kernel's two hours; the URL may set its own.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
# A peer hung inside a transaction (stopped, frozen VM) would hold its row and advisory locks, and
# so every other peer's store, forever: the server ends such a session after this long instead.
IDLE_IN_TRANSACTION_S = 10
CLAIM_GRACE_S = 2.0  # how long a taken worker id is retried before it counts as held by a live peer

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

    @property
    def broken(self) -> bool:
        """The session is gone (server restarted, backend terminated): reconnect, do not retry."""
        return self.raw.closed or getattr(self.raw, "broken", False)

    def lock_for_transaction(self, key: int) -> None:
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", [key])

    def close(self) -> None:
        self.raw.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def worker_claim_key(worker_id: str) -> int:
    return advisory_key(f"amp-worker:{worker_id}")


class PostgresBackend:
    """A shared PostgreSQL database, given by `[store] url`; the URL is logged masked.

    Besides the store's connection it may hold a second session for the life of the process:
    the advisory locks claiming this process's worker ids (`claim_worker_ids`). PostgreSQL
    releases them when that session ends, so a killed process frees its ids by itself.
    Touched by the store's thread only.
    """

    name = "postgres"

    def __init__(self, url: str):
        self.url = url
        self._claim_ids: list[str] = []
        self._claims: PgConnection | None = None

    def describe(self) -> str:
        return masked_url(self.url)

    def connect(self, purpose: str = "store") -> PgConnection:
        try:
            given = psycopg.conninfo.conninfo_to_dict(self.url)
            defaults = {k: v for k, v in KEEPALIVES.items() if k not in given}
            options = given.get("options", "")
            if "idle_in_transaction_session_timeout" not in options:  # the URL may set its own
                defaults["options"] = f"{options} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_S}s".strip()
            raw = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name=f"amp-runtime {purpose}",
                **defaults,
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

    def is_lost(self, conn: PgConnection, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error) and conn.broken

    # -- worker-id claims ----------------------------------------------------------------
    def claim_worker_ids(self, ids: list[str]) -> None:
        self._claim_ids = list(ids)
        self._take_claims(again=False)

    def check_claims(self) -> None:
        """Cheap when the claims' session is alive; else take them again on a new one."""
        if not self._claim_ids:
            return
        if self._claims is not None:
            try:
                self._claims.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                # Info: it goes with an outage of the store, which is the warning.
                log.info("store %s: the session holding the worker ids was lost (%s); claiming them again",
                         self.describe(), _first_line(exc))
                self._claims.close()
                self._claims = None
        self._take_claims(again=True)

    def _take_claims(self, *, again: bool) -> None:
        conn = self.connect("worker-id claims")
        try:
            for worker_id in self._claim_ids:
                if not self._try_lock(conn, worker_claim_key(worker_id)):
                    raise WorkerIdClaimed(
                        f"worker id {worker_id} was claimed by another process while this one was cut off from the store"
                        if again else
                        f"worker id {worker_id} is already claimed by another live process on this store"
                    )
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot claim the worker ids on {self.describe()}: {_first_line(exc)}") from None
        except BaseException:
            conn.close()  # the locks taken so far go with it
            raise
        self._claims = conn

    @staticmethod
    def _try_lock(conn: PgConnection, key: int) -> bool:
        # A holder killed a moment ago may still have its session until the server reads the EOF.
        deadline = time.monotonic() + CLAIM_GRACE_S
        while True:
            (taken,) = conn.execute("SELECT pg_try_advisory_lock(?)", [key]).fetchone()
            if taken or time.monotonic() >= deadline:
                return taken
            time.sleep(0.1)

    def close(self, conn: PgConnection) -> None:
        conn.close()  # nothing to checkpoint: every commit is already durable on the server
        if self._claims is not None:
            self._claims.close()  # releases the worker ids
            self._claims = None


__all__ = ["PostgresBackend", "PgConnection", "translate", "worker_claim_key"]
