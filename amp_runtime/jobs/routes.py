"""Jobs API (`/jobs*`)."""
from ..core.http import Api

api = Api("jobs", prefixes=("/jobs",))
