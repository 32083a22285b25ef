"""amp_runtime: a single-process job and task runtime on trio.

The public API is what users write functions, datasets and templates with:

    import amp_runtime

    @amp_runtime.function(name="hello")
    async def hello(input): ...
"""

__version__ = "0.1.0"

from .tasks.registry import function  # noqa: E402
from .jobs.datasets import dataset  # noqa: E402
from .durable.templates import template  # noqa: E402

__all__ = ["__version__", "function", "dataset", "template"]
