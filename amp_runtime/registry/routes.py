"""Registry read API (`/workers`, `/workers/{id}`)."""
from ..core.http import Api

api = Api("registry", prefixes=("/workers/",))
