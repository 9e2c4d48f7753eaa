"""The service's Redis turn shares a session's decoded messages between its reads, with no copy
per read (`RedisStore` histories, chat_history_k8s/history/codec.py), as the memory backend's
reads share its stored objects. That is safe only while nothing on the turn's path changes a
message of the window: these run real turns (the built-in model behind LangChain's `ainvoke`,
a real redis-server) and check every shared message against a fresh decode of the bytes Redis
holds, after every turn. A model that does change its input shows that the check can fail."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from langchain_core.messages import BaseMessage

from chat_history_k8s.conversation import build_conversations
from chat_history_k8s.conversation.message_history import MessageHistoryConversations
from chat_history_k8s.history.codec import decode
from chat_history_k8s.history.redis import RedisStore
from chat_history_k8s.metrics import Metrics
from chat_history_k8s.model import BuiltinChatModel
from tests.conftest import make_settings


class _Scribbler(BuiltinChatModel):
    """A model that writes on the messages it is given, as no model should."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        for message in messages[:-1]:
            message.response_metadata["seen_by"] = "scribbler"
        return super()._generate(messages, *args, **kwargs)


async def _turns_then_check(redis_url: str, model: BuiltinChatModel) -> None:
    """Three sessions saying the same things (their human messages are the same bytes), five
    turns each; after every turn, each session's shared window equals what Redis stores."""
    settings = make_settings("redis", redis_url, history_window_messages=6)
    conversations = build_conversations(settings, model, Metrics())
    assert isinstance(conversations, MessageHistoryConversations)
    store = conversations.store
    assert isinstance(store, RedisStore)
    await conversations.start()
    client = redis.Redis.from_url(redis_url)
    try:
        for turn in range(5):
            for session in ("a", "b", "c"):
                await conversations.turn(session, f"turn {turn}: my name is Ada")
                windows = {s: await store.history(s).aget_window(6) for s in ("a", "b", "c")}
                for name, window in windows.items():
                    stored = client.lrange(f"{settings.redis_key_prefix}{name}", -6, -1)
                    fresh = decode(stored)
                    assert window == fresh
                    assert [m.__dict__ for m in window] == [m.__dict__ for m in fresh]
                    assert [m.model_fields_set for m in window] == [
                        m.model_fields_set for m in fresh
                    ]
                # Shared within a session, never across sessions.
                again = await store.history(session).aget_window(6)
                assert all(a is b for a, b in zip(windows[session], again, strict=True))
                others = [id(m) for s, w in windows.items() if s != session for m in w]
                assert not {id(m) for m in windows[session]} & set(others)
    finally:
        client.close()
        await conversations.aclose()


async def test_nothing_on_the_turns_path_changes_a_shared_message(redis_url: str) -> None:
    await _turns_then_check(redis_url, BuiltinChatModel())


async def test_a_model_that_changes_its_input_is_caught(redis_url: str) -> None:
    with pytest.raises(AssertionError):
        await _turns_then_check(redis_url, _Scribbler())
