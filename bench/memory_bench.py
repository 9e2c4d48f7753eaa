"""Memory: what a stored message costs in Redis, and what a memory-backend replica grows to.

- Redis: sessions written by `RedisChatHistory.append_turn` (the service's encoding), then
  `MEMORY USAGE <key> SAMPLES 0` (exact) and the `used_memory` delta, per message, against the
  payload (the message text) and the encoded JSON.
- Memory backend: two real replicas (`uvicorn chat_history_k8s.main:app`, HISTORY_BACKEND=memory),
  one with its bounds tight enough to bind and one with them lifted, filled over HTTP by wrk with
  the same turns; resident memory (VmRSS) and held messages (from /metrics) after 10k and 100k
  messages offered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import bench_redis
from bench.http_bench import wrk
from bench.store_bench import make_pair
from chat_history_k8s.history.redis import RedisChatHistory
from testsupport import RedisServer, Replica


@dataclass(frozen=True)
class MemoryConfig:
    redis_shapes: tuple[tuple[int, int], ...]  # (sessions, messages per session)
    sessions: int  # sessions the HTTP fill cycles through
    offered: tuple[int, ...]  # messages offered to the replicas, cumulative
    bounded_sessions: int
    bounded_messages: int


FULL = MemoryConfig(
    redis_shapes=((1000, 10), (1000, 100), (10, 10_000)),
    sessions=1000,
    offered=(10_000, 100_000),
    bounded_sessions=10_000,  # the service's default MEMORY_MAX_SESSIONS
    bounded_messages=20,  # = the model's window: older messages are never read anyway
)
SMOKE = MemoryConfig(
    redis_shapes=((20, 10), (2, 100)),
    sessions=20,
    offered=(200, 1000),
    bounded_sessions=10_000,
    bounded_messages=10,
)


@dataclass
class MemoryResults:
    redis: list[dict[str, Any]] = field(default_factory=list)
    replicas: list[dict[str, Any]] = field(default_factory=list)
    bounds: dict[str, int] = field(default_factory=dict)


def run(config: MemoryConfig, workdir: Path, log: Callable[[str], None]) -> MemoryResults:
    results = MemoryResults(
        bounds={"sessions": config.bounded_sessions, "messages": config.bounded_messages}
    )
    server = bench_redis(workdir / "redis-memory")
    try:
        results.redis = [redis_bytes(server, s, n) for s, n in config.redis_shapes]
    finally:
        server.stop()
    log("memory: measured Redis bytes per message")
    results.replicas = replica_rss(config, workdir)
    log("memory: measured memory-backend replicas")
    return results


# -- Redis -------------------------------------------------------------------------------------
def redis_bytes(server: RedisServer, sessions: int, per_session: int) -> dict[str, Any]:
    client = server.client(socket_timeout=30)
    client.flushall()
    baseline = int(client.info("memory")["used_memory"])
    payload = encoded = 0
    for s in range(sessions):
        history = RedisChatHistory(f"mem-{s}", client=client, ttl_seconds=7 * 24 * 3600)
        messages = [m for i in range(per_session // 2) for m in make_pair(s * per_session + i)]
        payload += sum(len(m.text.encode()) for m in messages)
        history.append_turn(messages)
    keys = list(client.scan_iter(match="chat-history:mem-*", count=1000))
    usage = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
    encoded = sum(sum(len(item) for item in client.lrange(k, 0, -1)) for k in keys)
    used = int(client.info("memory")["used_memory"]) - baseline
    client.flushall()
    client.close()
    total = sessions * per_session
    return {
        "sessions": sessions,
        "per_session": per_session,
        "messages": total,
        "payload_per_message": payload / total,
        "encoded_per_message": encoded / total,
        "memory_usage_per_message": usage / total,
        "used_memory_per_message": used / total,
    }


# -- memory-backend replicas -------------------------------------------------------------------
def metric(replica: Replica, name: str) -> float:
    """One sample of the replica's /metrics, by its full name (labels included)."""
    text = httpx.get(f"{replica.url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def held_messages(replica: Replica) -> int:
    return int(metric(replica, "chat_history_memory_messages"))


def turns_answered(replica: Replica) -> int:
    return int(metric(replica, 'chat_turns_total{backend="memory"}'))


def answered_at_least(replica: Replica, turns: int) -> bool:
    return turns_answered(replica) >= turns


def replica_rss(config: MemoryConfig, workdir: Path) -> list[dict[str, Any]]:
    variants = {
        "bounded": {
            "MEMORY_MAX_SESSIONS": str(config.bounded_sessions),
            "HISTORY_MAX_MESSAGES": str(config.bounded_messages),
        },
        "unbounded": {
            "MEMORY_MAX_SESSIONS": "10000000",
            "MEMORY_MAX_MESSAGES": "100000000",
            "HISTORY_MAX_MESSAGES": "1000000",
            "HISTORY_TTL_SECONDS": "0",
        },
    }
    replicas = {
        name: Replica(
            f"mem-{name}",
            workdir,
            {**env, "HISTORY_BACKEND": "memory", "HISTORY_WINDOW_MESSAGES": "10"},
        )
        for name, env in variants.items()
    }
    rows: list[dict[str, Any]] = []
    try:
        for replica in replicas.values():
            replica.start()
        for replica in replicas.values():
            replica.wait_ready("/readyz")
            # One turn (then forgotten) so that lazy imports and first-request caches are paid.
            httpx.post(
                f"{replica.url}/v1/chat", json={"session_id": "warm", "message": "hi"}, timeout=10
            )
            httpx.delete(f"{replica.url}/v1/sessions/warm", timeout=10)
        baseline = {name: r.process.rss_bytes() for name, r in replicas.items()}
        answered_before = {name: turns_answered(r) for name, r in replicas.items()}
        offered_before = 0
        for offered in config.offered:
            turns = (offered - offered_before) // 2
            # Both replicas get the same turns; fill them one after the other (RSS does not
            # depend on speed, and each fill gets the whole machine).
            for replica in replicas.values():
                target = turns_answered(replica) + turns
                wrk(
                    replica.url,
                    connections=8,
                    seconds=600,
                    tag="fill",
                    sessions=config.sessions,
                    quota=turns,
                    until=functools.partial(answered_at_least, replica, target),
                )
            offered_before = offered
            for name, replica in replicas.items():
                rss = replica.process.rss_bytes()
                held = held_messages(replica)
                rows.append(
                    {
                        "variant": name,
                        # wrk may overshoot its quota by the requests in flight: count what
                        # the replica answered.
                        "offered": 2 * (turns_answered(replica) - answered_before[name]),
                        "held": held,
                        "rss": rss,
                        "baseline_rss": baseline[name],
                        "growth_per_held": (rss - baseline[name]) / held if held > 0 else None,
                    }
                )
    finally:
        for replica in replicas.values():
            replica.stop()
    return rows
