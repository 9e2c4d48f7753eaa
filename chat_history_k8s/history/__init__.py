"""History backends; `build_store` is the one place that knows them all."""

from __future__ import annotations

from chat_history_k8s.config import Settings
from chat_history_k8s.history.base import ChatHistory, HistoryStore, HistoryUnavailable
from chat_history_k8s.history.memory import MemoryStore
from chat_history_k8s.history.redis import RedisStore, RoundTripHook
from chat_history_k8s.history.redis_pool import build_async_client

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
