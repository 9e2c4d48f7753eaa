"""Conversation stores, one per `HISTORY_API`; `build_conversations` is the one place that knows
every API and backend."""

from __future__ import annotations

from functools import partial

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.memory import InMemorySaver

from chat_history_k8s.checkpoint import LocalThreadLocks, RedisCheckpointSaver
from chat_history_k8s.config import Settings
from chat_history_k8s.conversation.base import Conversations, ModelFailed, TurnResult
from chat_history_k8s.conversation.checkpointer import CheckpointerConversations
from chat_history_k8s.conversation.message_history import MessageHistoryConversations
from chat_history_k8s.history import build_store
from chat_history_k8s.history.base import StoreMetric
from chat_history_k8s.history.redis_pool import WarmedPool, build_async_client
from chat_history_k8s.metrics import Metrics

__all__ = ["Conversations", "ModelFailed", "TurnResult", "build_conversations"]


def build_conversations(
    settings: Settings, model: BaseChatModel, metrics: Metrics
) -> Conversations:
    """The store for `settings.history_api` and `settings.history_backend`; does no I/O."""
    if settings.history_api == "message-history":
        store = build_store(settings, on_round_trip=metrics.round_trip)
        return MessageHistoryConversations(store, model, settings.history_window_messages, metrics)
    conversations = partial(
        CheckpointerConversations,
        model=model,
        window_messages=settings.history_window_messages,
        max_messages=settings.history_max_messages,
        metrics=metrics,
    )
    if settings.history_backend == "redis":
        pool = WarmedPool(build_async_client(settings), settings)
        saver = RedisCheckpointSaver(
            async_client=pool.client,
            key_prefix=f"{settings.redis_key_prefix}ckpt:",
            max_checkpoints=settings.checkpoint_max_checkpoints,
            ttl_seconds=settings.history_ttl_seconds,
            lease_seconds=settings.checkpoint_lease_seconds,
            lease_wait_seconds=settings.checkpoint_lease_wait_seconds,
            on_round_trip=metrics.round_trip,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_seconds=settings.redis_wait_timeout_seconds,
        )
        return conversations(
            backend="redis",
            saver=saver,
            serializer=saver,
            locked_deletes=False,
            pool=pool,
            closers=(saver.aclose, pool.aclose),  # background lease releases, then the pool
        )
    # Exactly as LangChain's docs show, unbounded: it keeps every channel version of every
    # thread, in this process only. That loss and that growth are what this mode demonstrates.
    memory_saver = InMemorySaver()
    return conversations(
        backend="memory",
        saver=memory_saver,
        serializer=LocalThreadLocks(wait_seconds=settings.checkpoint_lease_wait_seconds),
        locked_deletes=True,
        size_metrics=partial(_in_memory_size, memory_saver),
    )


def _in_memory_size(saver: InMemorySaver) -> list[StoreMetric]:
    """What an `InMemorySaver` holds, read from its public dicts without changing them. Its
    `storage` is a defaultdict: looking up an unknown thread leaves an empty entry behind, so
    threads are counted by whether they hold a checkpoint (one pass over the threads)."""
    threads = sum(1 for namespaces in list(saver.storage.values()) if any(namespaces.values()))
    return [
        StoreMetric(
            "chat_checkpoint_memory_threads",
            "Threads with a checkpoint held by this process's InMemorySaver.",
            "gauge",
            {(): float(threads)},
        ),
        StoreMetric(
            "chat_checkpoint_memory_blobs",
            "Channel versions held by this process's InMemorySaver (it never drops one).",
            "gauge",
            {(): float(len(saver.blobs))},
        ),
    ]
