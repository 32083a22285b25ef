"""Registry reporting API (`/workers.*`, `/auth.login`)."""
from ..core.http import Api

api = Api("reporting", prefixes=("/workers.", "/auth.", "/v2."))
