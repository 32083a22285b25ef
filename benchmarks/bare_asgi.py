"""The bare hypercorn-trio ASGI ceiling; it lives in amp_runtime.bench.bare_asgi (used by
`amp-runtime bench --compare` too). Run: python -m benchmarks.bare_asgi"""

import trio

from amp_runtime.bench.bare_asgi import app, main  # noqa: F401

if __name__ == "__main__":
    trio.run(main)
