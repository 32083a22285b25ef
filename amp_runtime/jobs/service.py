"""Stub: replaced by the jobs issue."""
from ..core.service import ServiceBase


class JobService(ServiceBase):
    pass
