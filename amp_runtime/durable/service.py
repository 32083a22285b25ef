"""Stub: replaced by the durable-workers issue."""
from ..core.service import ServiceBase


class DurableService(ServiceBase):
    pass
