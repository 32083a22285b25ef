"""amp_runtime: a single-process job and task runtime on trio.

The public API is what users write functions, datasets and templates with:

    import amp_runtime

    @amp_runtime.function(name="hello")
    async def hello(input): ...

Its names resolve on first use (PEP 562), so importing a submodule alone (the binary's start-up
code, `amp_runtime.frozen`) costs no more than that submodule.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "function", "dataset", "template"]

_PUBLIC = {"function": ".tasks.registry", "dataset": ".jobs.datasets", "template": ".durable.templates"}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "__version__":
        from .build_info import package_version

        value = package_version()  # from the build (setuptools-scm); see build_info.py
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
