"""A task function that logs a warning with its own logger, as user code does."""

import logging

import amp_runtime

log = logging.getLogger("user_code.fns")


@amp_runtime.function(name="warn_loudly")
def warn_loudly(input: str) -> str:
    log.warning("user code says %s", input)
    return input


@amp_runtime.function(name="warn_loudly_async")
async def warn_loudly_async(input: str) -> str:
    log.warning("user code says %s", input)
    return input
