"""The base every family's service starts from: how the runtime starts, stops and drains it."""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from .actor import supervise


class ServiceBase:
    """A service owns a family's actors. Override `actors()` or `run()`.

    `run` supervises the actors inside the runtime's service nursery; `stop_accepting` is called
    when the process starts draining (refuse new work); `drain` waits for running work.
    The wiring (`amp_runtime.wiring`) hands each service its config and store, plus whatever
    sibling it uses as its own constructor argument.
    """

    def __init__(self, config: Any, store: Any):
        self.config = config
        self.store = store

    def actors(self) -> list:
        return []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await run_service_actors(
            self.actors(), self.config.actors.max_restarts_per_minute, task_status=task_status
        )

    def stop_accepting(self) -> None:
        pass

    async def drain(self) -> None:
        pass


async def run_service_actors(actors, max_restarts: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Supervise a service's actors in one nursery; returns when all of them return."""
    async with trio.open_nursery() as nursery:
        for actor in actors:
            await nursery.start(partial(supervise, actor, max_restarts_per_minute=max_restarts))
        task_status.started()
