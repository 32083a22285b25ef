"""Which bundled libraries the binary unpacks itself (amp_runtime/deferred.py), not the bootloader.

Run by the spec at build time. The bootloader inflates every bundled file on one thread before
Python starts; the process can do it better: in a process of its own while the runtime imports,
each library just before its first import needs it, read straight from the executable (the
bootloader leaves a PKG entry where it is). What must stay with the bootloader is what
Python needs before `amp_runtime.deferred` runs: libpython, the extension modules that
PyInstaller's bootstrap, its runtime hooks and the entry script import up to `prepare()`
(found by importing the same modules in the build's Python), and every library one of those
links to. A library any kept binary links to stays too; the rest follow the extension module
that needs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

SUFFIX = ".z"
MANIFEST = "amp_runtime_deferred.txt"  # one line per module: its name, then the files it needs
# What runs before prepare() in the binary: PyInstaller's bootstrap (pyiboot01_bootstrap,
# pyimod02_importers, pyimod03_ctypes), its runtime hooks (pyi_rth_inspect, pyi_rth_pkgutil,
# pyi_rth_multiprocessing: what each imports) and the entry script's imports. A module missed
# here stops the binary at its start, which every test of tests/packaging would show.
_EARLY = ("io", "struct", "zlib", "marshal", "encodings", "warnings", "ctypes", "inspect", "zipfile", "pkgutil",
          "multiprocessing", "multiprocessing.spawn", "subprocess", "runpy", "amp_runtime.frozen",
          "amp_runtime.deferred")
_LIST_EXTENSIONS = ("import sys\n{imports}\nprint(*[name for name, module in list(sys.modules.items())"
                    " if str(getattr(module, '__file__', '') or '').endswith('.so')], sep='\\n')")


def _extensions_imported(modules: tuple[str, ...], root: Path) -> list[str]:
    """Extension modules the build's Python imports for `modules`, in import order."""
    code = _LIST_EXTENSIONS.format(imports="\n".join(f"import {name}" for name in modules))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return out.stdout.split()


def _module_name(dest: str) -> str:
    """`python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so` -> `_ssl`;
    `psycopg_binary/pq.cpython-311-x86_64-linux-gnu.so` -> `psycopg_binary.pq`."""
    parts = dest.split("/")
    if dest.startswith("python3") and "lib-dynload" in parts:
        parts = parts[-1:]
    return ".".join([*parts[:-1], parts[-1].split(".")[0]])


def _pack(source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    deflater = zlib.compressobj(9)
    with open(source, "rb") as src, open(target, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(deflater.compress(chunk))
        out.write(deflater.flush())


def defer(binaries: list, datas: list, workdir: Path, root: Path) -> tuple[list, list]:
    """The binaries the bootloader still unpacks, and the deferred ones as entries it leaves in
    the executable: `<dest>.z`, typecode PKG (an archive of its own to the bootloader, which
    does not extract it), zlib-packed here. The manifest (modules in the order `serve` imports
    them) goes into `datas`."""
    from PyInstaller.depend.bindepend import get_imports

    early = set(_extensions_imported(_EARLY, root))
    order = _extensions_imported(("amp_runtime.cli", "amp_runtime.runtime"), root)
    by_path = {os.path.realpath(path): dest for dest, path, _ in binaries}
    needs = {dest: {by_path[os.path.realpath(p)] for _, p in get_imports(path) if p and os.path.realpath(p) in by_path}
             for dest, path, _ in binaries}
    deferred_modules = {dest for dest, _, kind in binaries
                        if kind == "EXTENSION" and _module_name(dest) not in early}
    kept = {dest for dest, _, kind in binaries if dest not in deferred_modules and kind == "EXTENSION"}
    kept |= {dest for dest, _, _ in binaries if dest.startswith("libpython")}
    kept_needs = set().union(*(needs[dest] for dest in kept)) | kept
    deferred_libs = {lib for dest in deferred_modules for lib in needs[dest]} - kept_needs
    groups = {_module_name(dest): [dest, *sorted(needs[dest] & deferred_libs)] for dest in deferred_modules}
    rank = {name: index for index, name in enumerate(order)}
    lines = [" ".join([name, *files]) for name, files in sorted(groups.items(), key=lambda g: (rank.get(g[0], len(rank)), g[0]))]
    stored = []
    for dest, path, _ in binaries:
        if dest in deferred_modules or dest in deferred_libs:
            packed = workdir / "deferred" / (dest + SUFFIX)
            _pack(path, packed)
            stored.append((dest + SUFFIX, str(packed), "PKG"))
    manifest = workdir / MANIFEST
    manifest.write_text("\n".join(lines) + "\n")
    datas.append((MANIFEST, str(manifest), "DATA"))
    kept_binaries = [entry for entry in binaries if entry[0] not in deferred_modules and entry[0] not in deferred_libs]
    return kept_binaries, stored
