"""Drives our reporting API with the unmodified ClearML client (its APIClient), in its own
process so its environment-based configuration stays there. Prints one JSON line of findings.

    python -m tests.registry.clearml_client URL ACCESS_KEY SECRET_KEY
"""

import json
import os
import sys
import time


def main(url: str, access_key: str, secret_key: str) -> None:
    os.environ.update(CLEARML_API_HOST=url, CLEARML_API_ACCESS_KEY=access_key,
                      CLEARML_API_SECRET_KEY=secret_key, CLEARML_WEB_HOST=url, CLEARML_FILES_HOST=url)
    from clearml.backend_api.session.client import APIClient

    client = APIClient()
    client.workers.register(worker="clearml-1", tags=["cm"], queues=[], timeout=60)
    client.workers.status_report(worker="clearml-1", timestamp=int(time.time() * 1000), task="t-42",
                                 machine_stats={"cpu_usage": [12.5, 0.0], "memory_used": 1024})
    listed = {w.id: w for w in client.workers.get_all()}
    seen = listed.get("clearml-1")
    client.workers.unregister(worker="clearml-1")
    after = [w.id for w in client.workers.get_all()]
    print(json.dumps({
        "listed": sorted(listed),
        "task": getattr(getattr(seen, "task", None), "id", None),
        "tags": list(getattr(seen, "tags", []) or []),
        "after_unregister": after,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
