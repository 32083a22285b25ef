"""amp_runtime: a single-process job and task runtime on trio.

The public API is what users write functions, datasets and templates with:

    import amp_runtime

    @amp_runtime.function(name="hello")
    async def hello(input): ...
"""

from .build_info import package_version

__version__ = package_version()  # from the build (setuptools-scm); see build_info.py

from .tasks.registry import function  # noqa: E402
from .jobs.datasets import dataset  # noqa: E402
from .durable.templates import template  # noqa: E402

__all__ = ["__version__", "function", "dataset", "template"]
