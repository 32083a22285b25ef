"""Picks the store's backend from `[store] url` (apart from store.py: postgres.py imports store.py)."""

from __future__ import annotations

from pathlib import Path

from .store import DuckDBBackend, StoreBackend


def store_backend(url: str, duckdb_path: Path) -> StoreBackend:
    """`[store] url` empty: the DuckDB file at `duckdb_path`; a postgresql:// URL: PostgreSQL."""
    if not url:
        return DuckDBBackend(duckdb_path)
    from .postgres import PostgresBackend  # psycopg is loaded only when asked for

    return PostgresBackend(url)
