"""Build hooks only (metadata is in pyproject.toml): every wheel and sdist records which commit
it was built from, when, and its version in amp_runtime/_build_info.py (see amp_runtime/build_info.py).
The file is written into the build output, never into the checkout."""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent


def _build_info_module():
    # Loaded by path: importing the package would need its runtime dependencies.
    spec = importlib.util.spec_from_file_location("_amp_build_info", ROOT / "amp_runtime" / "build_info.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _write_build_info(package_dir: Path, version: str) -> None:
    build_info = _build_info_module()
    target = package_dir / build_info.GENERATED_MODULE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build_info.render(build_info.for_build(ROOT, version)))


class BuildPyWithInfo(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install asks git at run time instead
            _write_build_info(Path(self.build_lib) / "amp_runtime", self.distribution.get_version())


class SdistWithInfo(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        _write_build_info(Path(base_dir) / "amp_runtime", self.distribution.get_version())


setup(cmdclass={"build_py": BuildPyWithInfo, "sdist": SdistWithInfo})
