"""The benchmark suite: `python -m benchmarks` (see RESULTS.md for the latest figures)."""
