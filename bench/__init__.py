"""Benchmarks (scripts, not timed tests): `python -m bench.run`, see docs/benchmarks.md."""
