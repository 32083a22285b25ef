"""`[functions] paths` and `modules`: the user's own functions, loaded at start.

The paths go at the end of `sys.path`, after the installed (or, in the binary, bundled)
packages, so a user's file cannot shadow one the runtime depends on. Worker processes of
run="process" functions are started by multiprocessing's "spawn", which hands them the parent's
`sys.path`: they find the same modules. Every failure is one line (a ConfigError, exit 2).
"""

from __future__ import annotations

import importlib
import os
import sys

from .config import ConfigError


def add_paths(paths: list[str]) -> None:
    for entry in paths:
        entry = os.path.abspath(entry)  # a relative entry would follow the current directory
        if entry not in sys.path:
            sys.path.append(entry)


def load_modules(names: list[str], paths: list[str]) -> None:
    """Import each module in `names` (its decorators register) from `paths` or the installed packages."""
    add_paths(paths)
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise ConfigError(_not_found(name, exc, paths)) from None
        except Exception as exc:
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the message
            raise ConfigError(f"functions.modules: cannot import {name!r}: {detail}") from None


def _not_found(name: str, exc: ModuleNotFoundError, paths: list[str]) -> str:
    missing = exc.name or ""
    if missing and (name == missing or name.startswith(missing + ".")):
        where = ", ".join(paths) if paths else "no directories"
        return f"functions.modules: no module {name!r} in functions.paths ({where}) or the installed packages"
    have = "this binary does not bundle it" if getattr(sys, "frozen", False) else "it is not installed"
    return f"functions.modules: {name!r} imports {missing!r}, but {have}"
