"""Stub of the registry service; the registry issue replaces the body, keeping these signatures."""
from __future__ import annotations

from ..core.service import ServiceBase


class RegistryService(ServiceBase):
    async def live_workers(self, max_age_s: float | None = None) -> list[str]:
        """Ids of workers registered, not expired, with a heartbeat younger than `max_age_s`
        (default `[registry] liveness_s`)."""
        return [w.id for w in self.config.workers]
