"""Packaged static files served by name (the dashboard's, Swagger UI's).

A request's name is never handed to the file system: it is looked up in the directory's listing
of regular files, taken once. A name too long for the OS, with a NUL byte, `..`, a slash or a
directory's name is simply not in it: 404, never an OSError turned 500.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


class PackagedAssets:
    def __init__(self, directory: Callable[[], Path], content_types: dict[str, str]):
        self._directory = directory  # a callable: Swagger UI's package is imported on first use
        self._content_types = content_types
        self._names: frozenset[str] | None = None
        self._root: Path | None = None

    def _listing(self) -> frozenset[str]:
        if self._names is None:
            self._root = self._directory()
            with os.scandir(self._root) as entries:
                self._names = frozenset(entry.name for entry in entries
                                        if entry.is_file() and not entry.name.startswith("."))
        return self._names

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The file's bytes and content type, or None when `name` is none of the files."""
        if name not in self._listing():
            return None
        path = self._root / name
        try:
            body = path.read_bytes()
        except OSError:  # removed from the installed package since the listing
            return None
        return body, self._content_types.get(path.suffix, "application/octet-stream")
