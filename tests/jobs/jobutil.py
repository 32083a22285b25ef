"""Helpers shared by the jobs tests."""

from pathlib import Path

import duckdb

from ..helpers import wait_until

DATASET = "example/blocks@1.0.0"


def table_dir(data_dir: Path, table: str, dataset: str = "example/blocks/1.0.0") -> Path:
    return Path(data_dir) / "datasets" / dataset / table


def query(data_dir: Path, sql: str) -> list[tuple]:
    """Run `sql` where {blocks} and {transactions} name the job's Parquet files."""
    conn = duckdb.connect()
    try:
        return conn.execute(
            sql.format(
                blocks=f"read_parquet('{table_dir(data_dir, 'blocks')}/*.parquet')",
                transactions=f"read_parquet('{table_dir(data_dir, 'transactions')}/*.parquet')",
            )
        ).fetchall()
    finally:
        conn.close()


async def wait_for_status(client, job_id: int, *statuses: str, timeout: float = 20) -> dict:
    seen = {}

    async def reached():
        seen["job"] = (await client.get(f"/jobs/{job_id}")).json()
        return seen["job"]["status"] in statuses

    await wait_until(reached, timeout=timeout, interval=0.02)
    return seen["job"]


async def wait_for_files(client, job_id: int, at_least: int, timeout: float = 20) -> dict:
    seen = {}

    async def enough():
        seen["p"] = (await client.get(f"/jobs/{job_id}/progress")).json()
        tables = seen["p"]["tables"]
        return bool(tables) and min(t["files_count"] for t in tables.values()) >= at_least

    await wait_until(enough, timeout=timeout, interval=0.02)
    return seen["p"]
