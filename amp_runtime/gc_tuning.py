"""Garbage-collector settings of a serving process (`[server] gc_freeze`, `[server] gc_threshold`).

Its own module so that `amp-runtime serve` and the in-process `amp-runtime bench` server apply
the same settings without the bench importing the command line.
"""

from __future__ import annotations

from .config import Config


def tune_gc(config: Config) -> None:
    """Keep garbage collection off the request path, once the runtime has started.

    Measured under load (benchmarks/profile_notes.md): full collections walked ~130k objects
    and held the event loop 60-85 ms, young ones ran every ~10 requests. Freezing what startup
    built (modules, app, actors) and a larger young generation make them shorter and rarer."""
    import gc

    if config.server.gc_threshold:
        gc.set_threshold(*config.server.gc_threshold)
    if config.server.gc_freeze:
        gc.collect()
        gc.freeze()
