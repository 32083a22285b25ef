"""Durable workers API (`/v1/templates/...`)."""
from ..core.http import Api, render_durable

api = Api("durable", render_error=render_durable, prefixes=("/v1/",))
