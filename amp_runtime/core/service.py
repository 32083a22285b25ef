"""The base every family's service starts from: how the runtime starts, stops and drains it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..runtime import Runtime


class ServiceBase:
    """A service owns a family's actors. Override `actors()` or `run()`.

    `run` supervises the actors inside the runtime's service nursery; `stop_accepting` is called
    when the process starts draining (refuse new work); `drain` waits for running work.
    """

    def __init__(self, runtime: "Runtime"):
        self.runtime = runtime
        self.config = runtime.config
        self.store = runtime.store

    def actors(self) -> list:
        return []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from ..runtime import run_service_actors

        await run_service_actors(
            self.actors(), self.config.actors.max_restarts_per_minute, task_status=task_status
        )

    def stop_accepting(self) -> None:
        pass

    async def drain(self) -> None:
        pass
