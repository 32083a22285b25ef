"""A Python client for amp_runtime: `Client` (blocking) and `AsyncClient` (trio or asyncio).

    from amp_runtime.client import Client
    with Client("http://127.0.0.1:1610") as client:
        client.call("hello", {"name": "Andera"})           # 'Hello, Andera!'
        for item in client.stream("count", {"n": 3}): ...  # {'i': 0}, {'i': 1}, {'i': 2}
        for item in client.map("echo", inputs): ...        # Item(index, id, result | error), as they finish
"""

from .aio import AsyncClient
from .blocking import Client
from .errors import AmpError, Rejected, TaskCancelled, TaskFailed, TaskTimedOut, Unavailable
from .protocol import Item

__all__ = ["AsyncClient", "Client", "Item", "AmpError", "TaskFailed", "TaskTimedOut", "TaskCancelled",
           "Rejected", "Unavailable"]
