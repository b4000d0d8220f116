"""Benchmarks: scripts run with `python -m bench.NAME`; results in docs/benchmarks.md."""
