"""The Celery app `benchmarks/peers.py` runs (prefork workers over Redis): echo and the CPU burn."""

import os

from celery import Celery

from amp_runtime.tasks.builtin import burn

URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("peers", broker=URL, backend=URL)
app.conf.update(
    worker_prefetch_multiplier=int(os.environ.get("PEERS_CELERY_PREFETCH", "16")),
    task_acks_late=False,
    result_expires=300,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="echo")
def echo(input):
    return input


@app.task(name="cpu_burn")
def cpu_burn(input):
    return burn(input)
