"""Async Redis clients on the service's exact two operations, one turn after another.

    python -m bench.client_bench [--turns N] [--repeats R] [--out FILE]

A turn is what `RedisChatHistory` sends: `LRANGE key -20 -1`, then the append of two
pre-encoded messages (~450 B each, as the service stores them) with the cap and the sliding TTL,
either as the MULTI/RPUSH/LTRIM/EXPIRE/EXEC pipeline or as one `EVALSHA` of `APPEND_SCRIPT`.
Clients: redis-py asyncio with the hiredis parser and with its pure-Python parser, the
service's own multiplexed connection (when the project is importable), and, when
they are importable, coredis and valkey-glide (not dependencies of the project: install them in
a throwaway virtualenv to measure them; rows of clients that are absent say so). Each client
has one connection to one redis-server on loopback. Measured: turns/s and the *client process's*
CPU time per turn (`time.process_time`, every thread: glide's Rust core runs in threads of its
own), which is what a replica pays; median of R runs, runs interleaved in a rotating order.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

WINDOW, CAP, TTL = 20, 100, 7 * 24 * 3600
APPEND_SCRIPT = """
local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[1]) > 0 then redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1) end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
"""
HUMAN = b'{"type":"human","data":{"content":"' + b"q" * 300 + b'","type":"human"}}'
AI = b'{"type":"ai","data":{"content":"' + b"a" * 420 + b'","type":"ai","id":"lc_run--x-0"}}'

Turn = Callable[[str], Awaitable[Any]]


async def redis_py(url: str, *, hiredis: bool, script: bool) -> tuple[Turn, Callable[[], Any]]:
    import redis.asyncio as aredis
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

    parser = _AsyncHiredisParser if hiredis else _AsyncRESP2Parser
    client = aredis.Redis.from_url(url, parser_class=parser)
    sha = await client.script_load(APPEND_SCRIPT)

    async def turn(key: str) -> Any:
        await client.lrange(key, -WINDOW, -1)
        if script:
            return await client.evalsha(sha, 1, key, CAP, TTL, HUMAN, AI)
        async with client.pipeline(transaction=False) as pipe:
            for command in (
                ("MULTI",),
                ("RPUSH", key, HUMAN, AI),
                ("LTRIM", key, -CAP, -1),
                ("EXPIRE", key, TTL),
                ("EXEC",),
            ):
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)

    return turn, client.aclose


async def coredis_client(url: str, *, script: bool) -> tuple[Turn, Callable[[], Any]]:
    import coredis  # type: ignore[import-not-found,unused-ignore]  # optional: a throwaway venv

    client: Any = coredis.Redis.from_url(url, decode_responses=False)
    await client.__aenter__()
    sha = await client.script_load(APPEND_SCRIPT)

    async def turn(key: str) -> Any:
        await client.lrange(key, -WINDOW, -1)
        if script:
            return await client.evalsha(sha, keys=[key], args=[CAP, TTL, HUMAN, AI])
        async with client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, [HUMAN, AI])
            pipe.ltrim(key, -CAP, -1)
            pipe.expire(key, TTL)
        return None

    async def close() -> None:
        await client.__aexit__(None, None, None)

    return turn, close


async def glide_client(url: str, *, script: bool) -> tuple[Turn, Callable[[], Any]]:
    from glide import (  # type: ignore[import-not-found,unused-ignore]  # optional, as coredis
        Batch,
        GlideClient,
        GlideClientConfiguration,
        NodeAddress,
        Script,
    )

    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    client = await GlideClient.create(GlideClientConfiguration([NodeAddress(host, int(port))]))
    append = Script(APPEND_SCRIPT)

    async def turn(key: str) -> Any:
        await client.lrange(key, -WINDOW, -1)
        if script:
            return await client.invoke_script(
                append, keys=[key], args=[str(CAP), str(TTL), HUMAN, AI]
            )
        batch = Batch(is_atomic=True)
        batch.rpush(key, [HUMAN, AI])
        batch.ltrim(key, -CAP, -1)
        batch.expire(key, TTL)
        return await client.exec(batch, raise_on_error=True)

    return turn, client.close


async def multiplexed_client(url: str) -> tuple[Turn, Callable[[], Any]]:
    """The service's own turn connection (chat_history_k8s/history/redis_mux.py), EVALSHA."""
    import hashlib

    from chat_history_k8s.history.redis_mux import MultiplexedConnection

    host, port = url.removeprefix("redis://").split("/")[0].split(":")

    async def address() -> tuple[str, int]:
        return (host, int(port))

    mux = MultiplexedConnection(address, socket_timeout=5, connect_timeout=5)
    sha = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()  # noqa: S324 - EVALSHA's name
    await mux.execute([("SCRIPT", "LOAD", APPEND_SCRIPT)], idempotent=True)

    async def turn(key: str) -> Any:
        await mux.execute([("LRANGE", key, -WINDOW, -1)], idempotent=True)
        return await mux.execute([("EVALSHA", sha, 1, key, CAP, TTL, HUMAN, AI)], idempotent=False)

    return turn, mux.aclose


def clients() -> dict[str, Callable[[str], Awaitable[tuple[Turn, Callable[[], Any]]]]]:
    out: dict[str, Callable[[str], Awaitable[tuple[Turn, Callable[[], Any]]]]] = {}
    for script in (False, True):
        how = "EVALSHA" if script else "MULTI pipeline"
        out[f"redis-py asyncio + hiredis, {how}"] = functools.partial(
            redis_py, hiredis=True, script=script
        )
        out[f"redis-py asyncio, Python parser, {how}"] = functools.partial(
            redis_py, hiredis=False, script=script
        )
        if importlib.util.find_spec("coredis"):
            out[f"coredis, {how}"] = functools.partial(coredis_client, script=script)
        if importlib.util.find_spec("glide"):
            out[f"valkey-glide, {how}"] = functools.partial(glide_client, script=script)
    if importlib.util.find_spec("chat_history_k8s"):
        out["this project's multiplexed connection (history/redis_mux.py), EVALSHA"] = (
            multiplexed_client
        )
    return out


async def measure(url: str, turns: int, repeats: int) -> dict[str, list[tuple[float, float]]]:
    made = clients()
    names = list(made)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    built = {name: await made[name](url) for name in names}
    for name in names:  # warm-up: connect, load, first replies
        for i in range(50):
            await built[name][0](f"warm:{i % 16}")
    for rnd in range(repeats):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            turn = built[name][0]
            keys = [f"cb:{rnd}:{name}:{i % 64}" for i in range(turns)]
            wall, cpu = time.perf_counter(), time.process_time()
            for key in keys:
                await turn(key)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            runs[name].append((turns / wall, cpu / turns * 1e6))
    for _, close in reversed(built.values()):
        await close()
    return runs


def table(runs: dict[str, list[tuple[float, float]]]) -> list[str]:
    base = "redis-py asyncio + hiredis, MULTI pipeline"
    base_cpu = statistics.median(c for _, c in runs[base])
    lines = [
        "| client, append as | turns/s | client CPU µs/turn | CPU vs redis-py + hiredis, MULTI |",
        "|---|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        rate = statistics.median(r for r, _ in rs)
        cpu = statistics.median(c for _, c in rs)
        lines.append(f"| {name} | {rate:,.0f} | {cpu:,.0f} | {cpu / base_cpu:.2f} x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    # Standalone (no testsupport): runnable from a throwaway virtualenv without the project.
    binary = shutil.which("redis-server")
    if binary is None:
        parser.error("redis-server is not on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="client-bench-") as tmp:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        with subprocess.Popen(argv, stdout=subprocess.DEVNULL) as server:
            try:
                for _ in range(100):
                    with socket.socket() as probe:
                        if probe.connect_ex(("127.0.0.1", port)) == 0:
                            break
                    time.sleep(0.05)
                runs = asyncio.run(measure(f"redis://127.0.0.1:{port}/0", args.turns, args.repeats))
            finally:
                server.terminate()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    versions = []
    for dist in ("redis", "hiredis", "coredis", "valkey-glide"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed: its rows are absent)")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Async Redis clients on the service's two operations",
        "",
        "Written by `python -m bench.client_bench --out docs/benchmarks-clients.md` (run it "
        "from a virtualenv that also has coredis and valkey-glide); do not edit by hand. "
        f"Run of {stamp}, {args.turns} turns per run, median of {args.repeats} runs, "
        f"load average {load_before} before and {load} after (a shared 2-core machine). "
        f"Versions: {', '.join(versions)}.",
        "",
        *(__doc__ or "").split("\n\n", 2)[2].splitlines(),
        "",
        *table(runs),
        "",
        "Least client CPU per turn in this run: "
        + min(runs, key=lambda name: statistics.median(c for _, c in runs[name]))
        + ". The service sends a turn's read and its append (one `EVALSHA`) over its own "
        "multiplexed connection in standalone and Sentinel modes, where it also pipelines "
        "concurrent turns on one socket (which this one-turn-at-a-time run does not show); "
        "redis-py (asyncio, hiredis parser) serves everything else and a Redis Cluster. "
        "Another client would have to bring Sentinel and Cluster support as redis-py does "
        "(chat_history_k8s/history/redis_pool.py) to be adopted.",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
