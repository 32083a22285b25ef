"""The `@amp_runtime.dataset` decorator and the table of datasets jobs can run.

A dataset is a pure function `fn(table, first_block, last_block) -> str` returning a DuckDB
SELECT that produces the rows of `table` for the inclusive block range. It must be
deterministic (same range -> same rows, same order) so a resumed job can rewrite a file it may
have written before a crash without changing its content. The runtime runs the query in a
worker thread on a private in-memory DuckDB connection and writes the result as Parquet:

    @amp_runtime.dataset("acme/prices", version="1.0.0", tables=["prices"])
    def prices(table, first_block, last_block):
        return f"SELECT range AS block_num FROM range({first_block}, {last_block} + 1)"

A function that raises (or whose SQL fails) marks the job Failed with that message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

QueryFn = Callable[[str, int, int], str]


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    namespace: str
    name: str
    version: str
    tables: tuple[str, ...]
    query: QueryFn

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}@{self.version}"


DATASETS: dict[str, DatasetSpec] = {}


def dataset(name: str, *, version: str, tables: list[str]) -> Callable[[QueryFn], QueryFn]:
    """Register a dataset `namespace/name` at `version` producing `tables`."""
    namespace, sep, short = name.partition("/")
    if not sep or not _PART.match(namespace) or not _PART.match(short):
        raise ValueError(f"dataset name {name!r}: expected 'namespace/name'")
    if not _VERSION.match(version):
        raise ValueError(f"dataset {name}: bad version {version!r}")
    if not tables or len(set(tables)) != len(tables) or not all(_TABLE.match(t) for t in tables):
        raise ValueError(f"dataset {name}: tables must be distinct identifiers, got {tables!r}")

    def register(fn: QueryFn) -> QueryFn:
        spec = DatasetSpec(namespace, short, version, tuple(tables), fn)
        DATASETS[spec.ref] = spec
        return fn

    return register


def resolve(ref: str) -> DatasetSpec | None:
    """The dataset named `namespace/name@version`, or None."""
    return DATASETS.get(ref)


def output_dir(config) -> Path:
    """Where datasets' files are written: `[jobs] output_dir`, or `<data-dir>/datasets`."""
    return Path(config.jobs.output_dir) if config.jobs.output_dir else config.data_path / "datasets"
