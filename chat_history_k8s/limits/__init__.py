"""Per-principal abuse limits: turns per window and live sessions; `build_limiter` picks the
store (Redis when the history is in Redis, so every replica shares the counts)."""

from __future__ import annotations

import redis.asyncio as aredis

from chat_history_k8s.config import Settings
from chat_history_k8s.limits.base import Admission, Gate, Limiter, RateLimited
from chat_history_k8s.limits.memory import MemoryLimiter
from chat_history_k8s.limits.redis import RedisLimiter
from chat_history_k8s.metrics import Metrics

__all__ = ["Admission", "Gate", "Limiter", "RateLimited", "build_limiter"]


def build_limiter(
    settings: Settings, client: aredis.Redis | aredis.RedisCluster | None, metrics: Metrics
) -> Limiter | None:
    """None when no limit is set; does no I/O. `client`: the history's Redis client, if any."""
    if not settings.limits_enabled:
        return None
    if settings.history_backend == "redis":
        if client is None:
            raise ValueError("HISTORY_BACKEND=redis but the history store has no Redis client")
        return RedisLimiter(client, settings, on_round_trip=metrics.round_trip)
    return MemoryLimiter(settings)
