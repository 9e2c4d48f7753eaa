"""LangGraph checkpointers against what users would pick instead, on one conversation workload.

Peers (bench/checkpointers.py), all in this process, one event loop, turns one after another:
this project's `RedisCheckpointSaver` (inside the thread's lease, as the service runs it),
LangGraph's `InMemorySaver`, the official `AsyncSqliteSaver` (a file in the run's directory)
and `AsyncPostgresSaver` (a real PostgreSQL server started here), the same Redis saver with the
messages channel as a `DeltaChannel` (beta), and the message-history path as the baseline. A
turn is a ~200-character user message and the built-in model's ~240-character answer.

1. **Preload** (untimed): for each history length L, threads that already have L turns, made by
   running the turns. The timed turns are spread over enough threads that no thread grows by
   more than ~10% (one thread at 1,000 turns, 200 at 10). Bytes stored per thread: the mean
   over the threads of a length, read once they are written.
2. **Timed**: every repeat runs every peer at every length, in a rotating order, so they share
   the machine's noise; turns/s is the median over repeats.
3. **Counted**: a few more turns on the first thread of each length, with the store's own
   witnesses (wire, server statistics, statement traces); and, at the longest length, the share
   of a turn spent in LangGraph's serializer (cProfile), for the bounded saver and InMemorySaver.
4. **RSS**: two child processes (bench/hold_threads.py), InMemorySaver and the memory store,
   each filled with THREADS x TURNS; they fill while the preload runs and are stopped before
   anything is timed.
5. **DeltaChannel**: does a conversation read back whole on the Redis saver with the default
   retention (4 checkpoints) and unbounded (0)?
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import importlib.metadata
import pstats
import signal
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from langchain_core.messages import AnyMessage, HumanMessage

from bench import bench_redis
from bench.checkpointers import (
    REDIS_PREFIX,
    HistoryPeer,
    MemoryPeer,
    Peer,
    PostgresPeer,
    RedisDeltaPeer,
    RedisPeer,
    SqlitePeer,
    make_agent,
    thread_config,
    user_text,
)
from bench.counting import WireStats, acounted
from chat_history_k8s.checkpoint import RedisCheckpointSaver
from testsupport import PostgresServer, Process, ProcessError, wait_until

PEERS = ("redis", "memory", "sqlite", "postgres", "redis_delta", "history")
# Every store without waiting for the disk (see bench/checkpointers.py).
POSTGRES_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_preload_libraries": "pg_stat_statements",
}
HOLD_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class CheckpointConfig:
    lengths: tuple[int, ...]  # turns of history before the timed turns
    repeats: int
    turns: dict[int, int]  # timed turns per run, by length
    count_turns: int
    rss_threads: int
    rss_turns: int
    delta_turns: int  # turns of the DeltaChannel read-back check


FULL = CheckpointConfig(
    lengths=(10, 100, 1000),
    repeats=5,
    turns={10: 40, 100: 20, 1000: 8},
    count_turns=3,
    rss_threads=1000,
    rss_turns=50,
    delta_turns=120,
)
SMOKE = CheckpointConfig(
    lengths=(5, 10, 20),
    repeats=2,
    turns={5: 4, 10: 4, 20: 4},
    count_turns=2,
    rss_threads=20,
    rss_turns=5,
    delta_turns=6,
)


@dataclass
class CheckpointResults:
    lengths: tuple[int, ...]
    peers: tuple[str, ...] = PEERS
    turns_per_s: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    stored_bytes: dict[str, dict[int, float]] = field(default_factory=dict)
    counts: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    rss: list[dict[str, Any]] = field(default_factory=list)
    delta: list[dict[str, Any]] = field(default_factory=list)
    threads: dict[int, int] = field(default_factory=dict)  # threads per length
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    serde_share: dict[str, float] = field(default_factory=dict)  # at the longest length
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase
    env: dict[str, Any] = field(default_factory=dict)  # date, load, wall time (bench/run.py)

    def median(self, peer: str, length: int) -> float:
        return statistics.median(self.turns_per_s[peer][length])

    def ratio(self, peer: str, length: int, other: str) -> float:
        """Median over repeats of turns/s of `peer` / `other` at `length` (paired by repeat)."""
        mine, theirs = self.turns_per_s[peer][length], self.turns_per_s[other][length]
        return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def threads_for(config: CheckpointConfig, length: int) -> int:
    """Threads to spread a length's timed turns over so that none grows by more than ~10%."""
    per_thread = max(1, length // 10)
    return -(-config.turns[length] * config.repeats // per_thread)


def thread_name(length: int, index: int) -> str:
    return f"L{length}-t{index}"


# -- RSS children ------------------------------------------------------------------------------
class Holder:
    """A bench/hold_threads.py child: start, read its baseline, let it fill, read it again."""

    def __init__(self, kind: str, config: CheckpointConfig, workdir: Path) -> None:
        self.kind = kind
        threads, turns = config.rss_threads, config.rss_turns
        self.process = Process(
            f"hold-{kind}",
            [sys.executable, "-m", "bench.hold_threads", kind, *map(str, (threads, turns))],
            workdir / f"hold-{kind}.log",
        )
        self.row: dict[str, Any] = {
            "kind": kind,
            "threads": config.rss_threads,
            "turns": config.rss_turns,
        }

    def _said(self, word: str) -> str | None:
        self.process.check_alive()
        lines = self.process.log.read_text(errors="replace").splitlines()
        return next((line for line in lines if line.startswith(word)), None)

    def start(self) -> None:
        self.process.start()

    def fill(self) -> None:
        """Once it is warm: its baseline RSS, then let it fill."""
        wait_until(lambda: self._said("warm") is not None, timeout_s=120, what=f"{self.kind} warm")
        self.row["baseline_rss"] = self.process.rss_bytes()
        self.process.send(signal.SIGUSR1)

    def held(self) -> dict[str, Any]:
        wait_until(
            lambda: self._said("held") is not None,
            timeout_s=HOLD_TIMEOUT_S,
            what=f"{self.kind} to hold its threads",
            interval_s=0.5,
        )
        _, messages, serialized = (self._said("held") or "").split()
        self.row |= {
            "rss": self.process.rss_bytes(),
            "messages": int(messages),
            "serialized": int(serialized),
        }
        return self.row

    def stop(self) -> None:
        self.process.stop()


# -- phases ------------------------------------------------------------------------------------
async def preload(peer: Peer, config: CheckpointConfig, results: CheckpointResults) -> None:
    """Threads of every length, by running their turns, and the bytes stored per thread: the
    mean over the threads of a length (whole-store sizes are page-granular: a difference over
    many threads, divided by their number, is exact enough)."""
    results.stored_bytes[peer.name] = {}
    for length in config.lengths:
        threads = [thread_name(length, i) for i in range(results.threads[length])]
        before = await peer.footprint(threads[0]) if peer.footprint_is_total else 0
        for thread in threads:
            for turn in range(length):
                await peer.turn(thread, user_text(thread, turn))
        if peer.footprint_is_total:
            stored = await peer.footprint(threads[0]) - before
        else:
            stored = sum([await peer.footprint(thread) for thread in threads])
        results.stored_bytes[peer.name][length] = stored / len(threads)


async def timed_run(peer: Peer, length: int, threads: int, first: int, turns: int) -> float:
    """Seconds for `turns` turns spread over the threads of `length`."""
    work = []
    for g in range(first, first + turns):
        thread = thread_name(length, g % threads)
        work.append((thread, user_text(thread, length + g // threads)))
    gc.collect()
    started = time.perf_counter()
    for thread, text in work:
        await peer.turn(thread, text)
    return time.perf_counter() - started


async def count(peer: Peer, length: int, turns: int) -> dict[str, float]:
    """Per turn, on the first thread of `length`: what the peer's witnesses counted."""
    thread = thread_name(length, 0)
    texts = [user_text(thread, 10**6 + k) for k in range(turns)]
    async with peer.counting():
        before = await peer.counters()
        for text in texts:
            await peer.turn(thread, text)
        after = await peer.counters()
    return {k: (after[k] - before[k]) / turns for k in after}


async def serde_share(peer: Peer, length: int, turns: int) -> float:
    """The share of a turn (cProfile, cumulative) inside LangGraph's serializer:
    `JsonPlusSerializer.dumps_typed` and `loads_typed`, on the first thread of `length`."""
    thread = thread_name(length, 0)
    texts = [user_text(thread, 2 * 10**6 + k) for k in range(turns)]
    profiler = cProfile.Profile()
    profiler.enable()
    for text in texts:
        await peer.turn(thread, text)
    profiler.disable()
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # real, but missing from typeshed's pstats
    total = sum(v[2] for v in raw.values())
    serde = sum(
        v[3]
        for f, v in raw.items()
        if f[0].endswith("serde/jsonplus.py") and f[2] in ("dumps_typed", "loads_typed")
    )
    return float(serde / total)


def whole(messages: list[AnyMessage], texts: list[str]) -> bool:
    """Every user message in order, each followed by a reply."""
    humans = [m.text for m in messages[0::2]]
    return humans == texts and all(m.type == "ai" for m in messages[1::2])


async def delta_check(url: str, turns: int) -> list[dict[str, Any]]:
    """A DeltaChannel conversation on the Redis saver, bounded (4) and unbounded (0): does it
    read back whole, and how many round trips does each turn take?"""
    rows = []
    for keep in (4, 0):
        wire = WireStats()
        client = acounted(aredis.Redis.from_url(url, socket_timeout=30), wire)
        saver = RedisCheckpointSaver(
            async_client=client, key_prefix=f"{REDIS_PREFIX}delta-check-{keep}:",
            max_checkpoints=keep,
        )  # fmt: skip
        agent = make_agent(saver, delta=True)
        texts = [user_text("delta-check", t) for t in range(turns)]
        trips, short = [], 0
        for t, text in enumerate(texts):
            before = wire.round_trips
            async with saver.alease("delta-check") as lease:
                state = await agent.ainvoke({"messages": [HumanMessage(text)]}, lease.config())
            trips.append(wire.round_trips - before)
            short += len(state["messages"]) < 2 * (t + 1)
        read = await agent.aget_state(thread_config("delta-check"))
        messages: list[AnyMessage] = read.values.get("messages", [])
        rows.append(
            {
                "max_checkpoints": keep,
                "turns": turns,
                "read_back": len(messages),
                "whole": whole(messages, texts),
                "turns_short": short,  # turns whose model saw fewer messages than the thread had
                "round_trips": trips,
            }
        )
        await client.aclose()
    return rows


# -- the whole part ----------------------------------------------------------------------------
def run(config: CheckpointConfig, workdir: Path, log: Callable[[str], None]) -> CheckpointResults:
    redis_server = bench_redis(workdir / "redis-checkpoint")
    postgres = PostgresServer(workdir / "postgres", settings=POSTGRES_SETTINGS)
    holders = [Holder(kind, config, workdir) for kind in ("checkpointer", "history")]
    try:
        postgres.start()
        for holder in holders:
            holder.start()
        results = asyncio.run(_run(config, workdir, redis_server.url, postgres, holders, log))
        results.versions |= {"redis-server": redis_server.version, "PostgreSQL": postgres.version}
        return results
    finally:
        for holder in holders:
            holder.stop()
        postgres.close()
        redis_server.stop()


async def _run(
    config: CheckpointConfig,
    workdir: Path,
    redis_url: str,
    postgres: PostgresServer,
    holders: list[Holder],
    log: Callable[[str], None],
) -> CheckpointResults:
    results = CheckpointResults(lengths=config.lengths)
    results.threads = {length: threads_for(config, length) for length in config.lengths}
    results.settings = {
        "repeats": config.repeats,
        "turns": config.turns,
        "count_turns": config.count_turns,
    }
    results.versions = {
        dist: importlib.metadata.version(dist)
        for dist in (
            "langgraph", "langgraph-checkpoint", "langchain", "langchain-core",
            "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres", "psycopg",
            "aiosqlite",
        )
    }  # fmt: skip
    results.versions["SQLite"] = sqlite3.sqlite_version
    for holder in holders:
        holder.fill()  # they fill while this process preloads (nothing is timed meanwhile)
    log("checkpoint: RSS holders filling in the background")

    started = time.monotonic()
    results.delta = await delta_check(redis_url, config.delta_turns)
    results.seconds["delta check"] = time.monotonic() - started
    log("checkpoint: checked DeltaChannel read-back on the Redis saver")

    peers: dict[str, Peer] = {
        "redis": RedisPeer(redis_url),
        "memory": MemoryPeer(),
        "sqlite": SqlitePeer(workdir / "checkpoints.sqlite"),
        "postgres": PostgresPeer(postgres.dsn),
        "redis_delta": RedisDeltaPeer(redis_url),
        "history": HistoryPeer(redis_url),
    }
    try:
        for peer in peers.values():
            await peer.open()
        for name, peer in peers.items():
            started = time.monotonic()
            await preload(peer, config, results)
            results.seconds[f"preload {name}"] = time.monotonic() - started
            log(f"checkpoint: preloaded {name} in {results.seconds[f'preload {name}']:.0f} s")

        started = time.monotonic()
        results.rss = [holder.held() for holder in holders]
        for holder in holders:
            holder.stop()  # before anything is timed
        results.seconds["RSS holders (after preload)"] = time.monotonic() - started
        log("checkpoint: RSS measured")

        started = time.monotonic()
        for name in PEERS:
            results.turns_per_s[name] = {length: [] for length in config.lengths}
        for rep in range(config.repeats):
            order = PEERS[rep % len(PEERS) :] + PEERS[: rep % len(PEERS)]
            for length in config.lengths:
                turns, threads = config.turns[length], results.threads[length]
                for name in order:
                    elapsed = await timed_run(peers[name], length, threads, rep * turns, turns)
                    results.turns_per_s[name][length].append(turns / elapsed)
            log(f"checkpoint: repeat {rep + 1}/{config.repeats} done")
        results.seconds["timed"] = time.monotonic() - started

        started = time.monotonic()
        for name, peer in peers.items():
            results.counts[name] = {
                length: await count(peer, length, config.count_turns) for length in config.lengths
            }
        last = config.lengths[-1]
        for name in ("redis", "memory"):
            results.serde_share[name] = await serde_share(peers[name], last, config.count_turns)
        results.seconds["counted"] = time.monotonic() - started
        log("checkpoint: counted round trips, statements and bytes; profiled the serializer")
    finally:
        for peer in peers.values():
            try:
                await peer.close()
            except Exception as exc:  # closing must not hide the run's own error
                log(f"checkpoint: closing {peer.name}: {exc}")
    return results


if __name__ == "__main__":  # python -m bench.checkpoint_bench: the smoke sizes, printed
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chat-history-ckbench-") as tmp:
        try:
            out = run(SMOKE, Path(tmp), lambda m: print(m, file=sys.stderr, flush=True))
        except ProcessError as exc:
            sys.exit(f"ERROR: {exc}")
        print(json.dumps(out.__dict__, indent=1, default=str))
