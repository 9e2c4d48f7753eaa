"""History backends; `build_store` is the one place that knows them all."""

from __future__ import annotations

from service.config import Settings
from service.history.base import ChatHistory, HistoryStore, HistoryUnavailable
from service.history.memory import MemoryStore
from service.history.redis import RedisStore, RoundTripHook
from service.history.redis_pool import build_async_client

__all__ = ["ChatHistory", "HistoryStore", "HistoryUnavailable", "build_store"]


def build_store(settings: Settings, on_round_trip: RoundTripHook | None = None) -> HistoryStore:
    """The store for `settings.history_backend`; does no I/O."""
    if settings.history_backend == "redis":
        return RedisStore(build_async_client(settings), settings, on_round_trip)
    return MemoryStore(
        max_sessions=settings.memory_max_sessions,
        max_total_messages=settings.memory_max_messages,
        max_messages=settings.history_max_messages,
        ttl_seconds=settings.history_ttl_seconds,
    )
