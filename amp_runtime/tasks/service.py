"""Stub: replaced by the tasks issue."""
from ..core.service import ServiceBase


class TaskService(ServiceBase):
    pass
