"""Observability: `/metrics` and the dashboard (`/`, `/ui`). Stub until the observability issue."""
from ..core.http import Api

api = Api("observability", prefixes=("/metrics", "/ui"))
