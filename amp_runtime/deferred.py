"""Libraries the one-file binary unpacks itself, in a forked process, while the runtime imports.

The bootloader inflates every bundled file on one thread before Python starts, and DuckDB's
library alone is half of them. So the spec (packaging/deferral.py) bundles most extension
modules and the libraries they link to as `<file>.z` entries of the executable's archive that
the bootloader leaves where they are (typecode PKG, zlib-packed by the spec), with a manifest,
`amp_runtime_deferred.txt`: one line per module, its name and the files it needs, in the order
`serve` imports them. They are read straight from the executable, through one descriptor
opened at start (a binary replaced on disk meanwhile does not change what this one reads). The process the bootloader started forks an
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
import struct
import sys
import threading
import zlib
from typing import Callable

SUFFIX = ".z"
# The archive PyInstaller appends to the bootloader: a cookie at its end, then a table of
# contents of fixed-size heads each followed by a name (PyInstaller/archive/readers.py).
_MAGIC = b"MEI\014\013\012\013\016"
_COOKIE = struct.Struct("!8sIIII64s")  # magic, archive length, toc offset, toc length, python, libpython
_ENTRY = struct.Struct("!IIIIBc")  # entry length, offset, stored length, length, compressed, typecode
_STORED = b"a"  # PKG: the bootloader extracts b, x, Z and n entries, never these
FAILED = ".failed"
MANIFEST = "amp_runtime_deferred.txt"
CHUNK = 1 << 20
WAIT_S = 0.001  # how often an import waiting for its file looks again
SMALL_BYTES = 1 << 20  # a packed file smaller than this is inflated by the import that needs it


class UnpackFailed(ImportError):
    """A deferred library could not be written (TMPDIR full or read-only): one line for the CLI."""


def stored_entries(executable: int) -> dict[str, tuple[int, int]]:
    """name -> (offset in the file, length) of each PKG entry of the executable's archive."""
    size = os.fstat(executable).st_size
    tail = os.pread(executable, min(size, 1 << 16), max(0, size - (1 << 16)))
    at = tail.rfind(_MAGIC)
    if at < 0:
        raise OSError(f"{sys.executable}: no PyInstaller archive")
    cookie_at = size - len(tail) + at
    _, length, toc_offset, toc_length, _, _ = _COOKIE.unpack(os.pread(executable, _COOKIE.size, cookie_at))
    start = cookie_at + _COOKIE.size - length
    toc = os.pread(executable, toc_length, start + toc_offset)
    entries: dict[str, tuple[int, int]] = {}
    position = 0
    while position < len(toc):
        entry_length, offset, stored, _, _, typecode = _ENTRY.unpack_from(toc, position)
        if typecode == _STORED:
            name = toc[position + _ENTRY.size:position + entry_length].rstrip(b"\0").decode("utf-8")
            entries[name] = (start + offset, stored)
        position += entry_length
    return entries


def _inflate(executable: int, offset: int, length: int, target: str) -> None:
    part = f"{target}.{os.getpid()}.{threading.get_ident()}.part"
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)  # the bootloader made only its own files' folders
        inflater = zlib.decompressobj()
        with open(part, "wb") as out:
            end = offset + length
            while offset < end:
                chunk = os.pread(executable, min(CHUNK, end - offset), offset)
                if not chunk:
                    raise OSError(f"{sys.executable}: shorter than its archive says")
                offset += len(chunk)
                out.write(inflater.decompress(chunk))
            out.write(inflater.flush())
            if not inflater.eof:
                raise OSError(f"{sys.executable}: {os.path.basename(target)} is cut short")
        os.chmod(part, 0o755)
        os.replace(part, target)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise


class _File:
    __slots__ = ("executable", "offset", "length", "target", "failed", "small")

    def __init__(self, base: str, name: str, executable: int, entries: dict[str, tuple[int, int]]):
        self.executable = executable
        self.target = os.path.join(base, name)
        self.failed = self.target + FAILED  # the unpacker's error, when it could not write the file
        self.offset, self.length = entries.get(name + SUFFIX, (0, 0))
        self.small = self.length < SMALL_BYTES

    def inflate(self) -> None:
        if not os.path.exists(self.target):
            if not self.length:
                raise OSError(f"{sys.executable}: no {os.path.basename(self.target)}{SUFFIX} in its archive")
            _inflate(self.executable, self.offset, self.length, self.target)


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
    try:
        executable = os.open(sys.executable, os.O_RDONLY | os.O_CLOEXEC)  # held for the process's life
        entries = stored_entries(executable)
    except OSError as exc:  # the bootloader read it a moment ago: only a file changed meanwhile
        print(f"amp-runtime: cannot read the libraries bundled in {sys.executable}: {exc}", file=sys.stderr)
        sys.exit(2)
    files: dict[str, _File] = {}
    modules: dict[str, list[_File]] = {}
    with open(os.path.join(base, MANIFEST), encoding="utf-8") as manifest:
        for line in manifest:
            name, *names = line.split()
            modules[name] = [files.setdefault(n, _File(base, n, executable, entries)) for n in names]
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
