"""Stub: replaced by the registry issue."""
from ..core.service import ServiceBase


class RegistryService(ServiceBase):
    pass
