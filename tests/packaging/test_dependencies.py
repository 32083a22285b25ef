"""pyproject.toml against the code: every third-party import is a runtime dependency, every
package-data pattern names files that exist. (`./dev` installs the test extra too, which hid
a missing dependency until a plain `pip install .` failed.)"""

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "amp_runtime"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared_dependencies() -> set[str]:
    return {normalized(re.match(r"[A-Za-z0-9._-]+", req).group()) for req in pyproject()["project"]["dependencies"]}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> the package files importing it (absolute imports, any depth)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "amp_runtime" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_runtime_dependency():
    distributions = metadata.packages_distributions()
    declared = declared_dependencies()
    imports = third_party_imports()
    assert "trio_websocket" in imports  # the scan sees the import that once was missing
    missing = {
        module: sorted(files) for module, files in imports.items()
        if not declared.intersection(normalized(d) for d in distributions.get(module, [module]))
    }
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_package_data_patterns_name_existing_files():
    for package, patterns in pyproject()["tool"]["setuptools"]["package-data"].items():
        base = ROOT / package.replace(".", "/")
        empty = [p for p in patterns if not any(f.is_file() for f in base.glob(p))]
        assert not empty, f"package-data of {package} names nothing: {empty}"
