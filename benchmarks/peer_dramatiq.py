"""The Dramatiq actors `benchmarks/peers.py` runs (processes x threads over Redis)."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from amp_runtime.tasks.builtin import burn

URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL), store_results=True, result_ttl=300_000))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0, queue_name="echo")
def echo(input):
    return input


@dramatiq.actor(store_results=True, max_retries=0, queue_name="cpu")
def cpu_burn(input):
    return burn(input)
