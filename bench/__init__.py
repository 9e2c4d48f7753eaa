"""Benchmarks: `scripts/bench.sh` runs them through `python -m bench.run`; the report is
docs/benchmarks.md. The processes they start come from the shared testsupport package."""

from __future__ import annotations

from pathlib import Path

from testsupport import RedisServer


def bench_redis(workdir: Path) -> RedisServer:
    """A started redis-server without persistence: the benchmarks measure the service and the
    client, not the disk."""
    server = RedisServer(workdir, appendonly=False)
    server.start()
    return server
