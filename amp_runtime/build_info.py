"""Which build is running: version, commit and dates (the registry's `info`, `--version`).

A built wheel carries `_build_info.py`, written by setup.py from git at build time. Run from a
git checkout (an editable install, `python -m amp_runtime` in the repo) git is asked at run time
instead, so a new commit shows without reinstalling. Anywhere else the commit is "unknown".
Standard library only: setup.py loads this file by path before the package's dependencies exist.
"""

from __future__ import annotations

import ast
import functools
import os
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import import_module, metadata
from pathlib import Path

DISTRIBUTION = "amp-runtime"
UNKNOWN = "unknown"
GENERATED_MODULE = "_build_info.py"
GIT_TIMEOUT_S = 5.0
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BuildInfo:
    version: str
    commit_sha: str
    commit_timestamp: str | None  # RFC 3339, UTC
    build_date: str | None  # RFC 3339, UTC; None when not built (run from a checkout)


def utc_rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_commit(root: Path) -> tuple[str, str] | None:
    """(full sha, commit time) of HEAD in the checkout at `root`, or None without git or a repo."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%H%n%cI"], capture_output=True, text=True,
            timeout=GIT_TIMEOUT_S, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or len(out[0]) < 40:
        return None
    return out[0], utc_rfc3339(datetime.fromisoformat(out[1]))


def build_time() -> str:
    """Now, or SOURCE_DATE_EPOCH when a reproducible build pins it."""
    pinned = os.environ.get("SOURCE_DATE_EPOCH", "")
    moment = datetime.fromtimestamp(int(pinned), timezone.utc) if pinned.isdigit() else datetime.now(timezone.utc)
    return utc_rfc3339(moment)


def for_build(source_root: Path, version: str) -> BuildInfo:
    """What a build from `source_root` records; an sdist without .git keeps what the sdist recorded."""
    commit = git_commit(source_root) if (source_root / ".git").exists() else None
    if commit is None:
        recorded = _read_generated(source_root / "amp_runtime" / GENERATED_MODULE)
        if recorded is not None:
            return BuildInfo(version, recorded.commit_sha, recorded.commit_timestamp, build_time())
    sha, committed = commit or (UNKNOWN, None)
    return BuildInfo(version, sha, committed, build_time())


def render(info: BuildInfo) -> str:
    """The source of `_build_info.py` for `info`."""
    lines = ['"""Written by setup.py at build time; not in git."""', ""]
    lines += [f"{name.upper()} = {value!r}" for name, value in asdict(info).items()]
    return "\n".join(lines) + "\n"


def _read_generated(path: Path) -> BuildInfo | None:
    if not path.is_file():
        return None
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return _from_constants(values)


def _from_constants(values: dict) -> BuildInfo | None:
    if not isinstance(values.get("VERSION"), str) or not isinstance(values.get("COMMIT_SHA"), str):
        return None
    return BuildInfo(values["VERSION"], values["COMMIT_SHA"], values.get("COMMIT_TIMESTAMP"), values.get("BUILD_DATE"))


def _checkout_root() -> Path | None:
    """The repository this package is imported from, if it is one (not site-packages)."""
    root = PACKAGE_DIR.parent
    return root if (root / ".git").exists() and (root / "pyproject.toml").is_file() else None


@functools.cache
def _generated() -> BuildInfo | None:
    try:
        return _from_constants(vars(import_module(f"{__package__}._build_info")))
    except ImportError:
        return None


@functools.cache
@functools.cache
def package_version() -> str:
    """The installed version (setuptools-scm, git-describe style); cheap, no subprocess."""
    generated = _generated() if _checkout_root() is None else None
    if generated is not None:
        return generated.version
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return f"0+{UNKNOWN}"


@functools.cache
def current() -> BuildInfo:
    """The running build; from a checkout this runs git once (blocking, bounded by GIT_TIMEOUT_S)."""
    root = _checkout_root()
    if root is None:
        generated = _generated()
        if generated is not None:
            return generated
        return BuildInfo(package_version(), UNKNOWN, None, None)
    sha, committed = git_commit(root) or (UNKNOWN, None)
    return BuildInfo(package_version(), sha, committed, None)
