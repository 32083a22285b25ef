"""Libraries the one-file binary unpacks itself, in a forked process, while the runtime imports.

The bootloader inflates every bundled file on one thread before Python starts, and DuckDB's
library alone is half of them. So the spec (packaging/deferral.py) bundles most extension
modules and the libraries they link to as `<file>.z` (zlib again: the bootloader only copies
them out) with a manifest, `amp_runtime_deferred.txt`: one line per module, its name and the
files it needs, in the order `serve` imports them. The process the bootloader started forks an
unpacker that inflates them in that order while the runtime imports; a meta path finder makes
the import of each module wait for its own files. Any other process of the binary (a
run="process" worker, a server `bench` starts), or this one once the unpacker is gone, inflates a
file it needs and does not find; `os.replace` makes the last writer win, whole.

Standard library only, and only modules Python has loaded before `start` (no json: `_json` may
be one of the deferred); nothing here runs outside a frozen binary.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import zlib
from typing import Callable

SUFFIX = ".z"
FAILED = ".failed"
MANIFEST = "amp_runtime_deferred.txt"
CHUNK = 1 << 20
WAIT_S = 0.001  # how often an import waiting for its file looks again
SMALL_BYTES = 1 << 20  # a packed file smaller than this is inflated by the import that needs it


class UnpackFailed(ImportError):
    """A deferred library could not be written (TMPDIR full or read-only): one line for the CLI."""


def _inflate(packed: str, target: str) -> None:
    part = f"{target}.{os.getpid()}.{threading.get_ident()}.part"
    try:
        inflater = zlib.decompressobj()
        with open(packed, "rb") as source, open(part, "wb") as out:
            while chunk := source.read(CHUNK):
                out.write(inflater.decompress(chunk))
            out.write(inflater.flush())
        os.chmod(part, 0o755)
        os.replace(part, target)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise


class _File:
    __slots__ = ("packed", "target", "failed", "small")

    def __init__(self, base: str, name: str):
        self.target = os.path.join(base, name)
        self.packed = self.target + SUFFIX
        self.failed = self.target + FAILED  # the unpacker's error, when it could not write the file
        try:
            self.small = os.path.getsize(self.packed) < SMALL_BYTES
        except OSError:
            self.small = True

    def inflate(self) -> None:
        if not os.path.exists(self.target):
            _inflate(self.packed, self.target)


class _Unpacker:
    """The meta path finder: the import of a deferred module waits until its files are out.

    `unpacker` is the pid of the forked process inflating every file in manifest order (a
    process, not a thread: a thread would wait for the GIL at every step while the main thread
    imports), or None: then a file is inflated here when an import first needs it."""

    def __init__(self, modules: dict[str, list[_File]], unpacker: int | None):
        self.modules = modules
        self.unpacker = unpacker
        self.unpacked = threading.Event()  # the unpacker has exited (and is reaped: no zombie)
        if unpacker is None:
            self.unpacked.set()
        else:  # blocked in waitpid, the GIL let go: it costs the imports nothing
            threading.Thread(target=self._reap, name="unpacker reaper", daemon=True).start()

    def _reap(self) -> None:
        try:
            os.waitpid(self.unpacker, 0)
        except ChildProcessError:
            pass
        self.unpacked.set()

    def _unpacker_running(self) -> bool:
        return not self.unpacked.is_set()

    def _wait_for(self, file: _File) -> None:
        if file.small:  # at once, here: faster than waiting for the unpacker to reach it
            self._inflate_here(file)
        while not os.path.exists(file.target):
            if os.path.exists(file.failed):
                with open(file.failed, encoding="utf-8", errors="replace") as failed:
                    raise UnpackFailed(_failure(file, failed.read()))
            if not self._unpacker_running():
                self._inflate_here(file)
                continue
            # No file-creation event in the standard library: look again shortly, or at once
            # when the unpacker ends. Only at start (the unpacker's life, ~1 s), in the
            # importing thread, which an import blocks anyway.
            self.unpacked.wait(WAIT_S)

    @staticmethod
    def _inflate_here(file: _File) -> None:
        try:
            file.inflate()
        except OSError as exc:
            raise UnpackFailed(_failure(file, str(exc))) from None

    def find_spec(self, fullname: str, path=None, target=None):
        files = self.modules.get(fullname)
        if files is None:
            return None
        for file in files:
            self._wait_for(file)
        return None  # on disk now: the usual finders load it

    def stop(self) -> None:
        """At exit: the bootloader removes the directory once this process ends, so the
        unpacker must not be writing into it then."""
        if self._unpacker_running():
            try:
                os.kill(self.unpacker, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.unpacked.wait(1.0)  # the reaper's waitpid returns at once


def _failure(file: _File, reason: str) -> str:
    return (f"amp-runtime: cannot unpack {os.path.basename(file.target)} into {os.path.dirname(file.target)}:"
            f" {reason} (the binary unpacks into TMPDIR: README, One binary)")


def _unpack_all(files: list[_File]) -> None:
    """The forked unpacker's whole life: every file, in order, then exit."""
    code = 0
    try:
        for file in files:
            try:
                file.inflate()
            except OSError as exc:
                code = 1
                part = f"{file.failed}.{os.getpid()}"
                try:  # whole or not at all: an import that waits reads it as soon as it exists
                    with open(part, "w", encoding="utf-8") as failed:
                        failed.write(str(exc))
                    os.replace(part, file.failed)
                except OSError:
                    pass
    finally:
        os._exit(code)


def start(eager: bool, in_child: Callable[[], None]) -> None:
    """Install the finder; `eager` (the process the bootloader started) also forks the unpacker,
    which calls `in_child` first."""
    base = getattr(sys, "_MEIPASS", None)
    if base is None or not os.path.exists(os.path.join(base, MANIFEST)):
        return
    files: dict[str, _File] = {}
    modules: dict[str, list[_File]] = {}
    with open(os.path.join(base, MANIFEST), encoding="utf-8") as manifest:
        for line in manifest:
            name, *names = line.split()
            modules[name] = [files.setdefault(n, _File(base, n)) for n in names]
    # The big ones, in the order `serve` imports them; the import that needs a small one
    # inflates it itself, sooner than the unpacker would reach it.
    missing = [file for file in files.values() if not file.small and not os.path.exists(file.target)]
    unpacker = None
    if eager and missing:
        unpacker = os.fork()  # no thread runs yet: this is before trio and the store
        if unpacker == 0:
            in_child()  # e.g. die with the runtime: killed, its bootloader removes the directory
            _unpack_all(missing)
    finder = _Unpacker(modules, unpacker)
    sys.meta_path.insert(0, finder)
    atexit.register(finder.stop)
