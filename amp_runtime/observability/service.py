"""What the observability routes read: the metrics scrape and the dashboard's overview."""

from __future__ import annotations

from .dashboard import Overview, build_overview
from .metrics import Metrics


class ObservabilityService:
    """Built by the wiring with the collaborators it reads; runs no actor of its own."""

    def __init__(self, metrics: Metrics, tasks):
        self.metrics = metrics
        self.tasks = tasks

    async def scrape(self) -> bytes:
        return await self.metrics.scrape()

    async def overview(self) -> Overview:
        return await build_overview(self.tasks)
