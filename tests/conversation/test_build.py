"""`build_conversations`: the one factory picks the API and backend the settings name."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from chat_history_k8s.checkpoint import LocalThreadLocks, RedisCheckpointSaver
from chat_history_k8s.conversation import build_conversations
from chat_history_k8s.conversation.checkpointer import CheckpointerConversations
from chat_history_k8s.conversation.message_history import MessageHistoryConversations
from chat_history_k8s.history.memory import MemoryStore
from chat_history_k8s.history.redis import RedisStore
from chat_history_k8s.metrics import Metrics
from chat_history_k8s.model import BuiltinChatModel
from tests.conftest import make_settings


def build(backend: str, history_api: str, **overrides: Any) -> object:
    settings = make_settings(backend, history_api=history_api, **overrides)
    return build_conversations(settings, BuiltinChatModel(), Metrics())


def test_message_history_wraps_the_history_store_of_the_backend() -> None:
    for backend, store_class in (("memory", MemoryStore), ("redis", RedisStore)):
        built = build(backend, "message-history")
        assert isinstance(built, MessageHistoryConversations)
        assert isinstance(built.store, store_class)
        assert (built.api, built.backend) == ("message-history", backend)


def test_checkpointer_on_memory_is_a_plain_in_memory_saver_with_local_locks() -> None:
    built = build("memory", "checkpointer", checkpoint_lease_wait_seconds=3)
    assert isinstance(built, CheckpointerConversations)
    assert type(built.saver) is InMemorySaver  # as LangChain's docs show: unbounded, per process
    serializer = built._serializer
    assert isinstance(serializer, LocalThreadLocks) and serializer.wait_seconds == 3
    assert (built.api, built.backend) == ("checkpointer", "memory")


def test_checkpointer_on_redis_takes_its_limits_and_leases_from_the_settings() -> None:
    built = build(
        "redis", "checkpointer", redis_key_prefix="app:", history_ttl_seconds=600,
        checkpoint_max_checkpoints=2, checkpoint_lease_seconds=12, checkpoint_lease_wait_seconds=4,
    )  # fmt: skip
    assert isinstance(built, CheckpointerConversations)
    saver = built.saver
    assert isinstance(saver, RedisCheckpointSaver) and built._serializer is saver
    assert (saver.settings.prefix, saver.settings.keep) == ("app:ckpt:", 2)
    assert (saver.settings.ttl_seconds, saver.settings.lease_ms) == (600, 12_000)
    assert saver.lease_wait_seconds == 4
