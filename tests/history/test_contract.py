"""One contract, every backend: the same behaviour from memory and Redis history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from chat_history_k8s.history import ChatHistory, HistoryStore, build_store
from chat_history_k8s.history.redis import RedisChatHistory, RedisStore
from tests.conftest import make_settings


@pytest.fixture
async def store(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[HistoryStore]:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    limits: dict[str, int] = {}
    for marker in reversed(list(request.node.iter_markers("limits"))):
        limits.update(marker.kwargs)
    s = build_store(make_settings(backend, url, **limits))
    yield s
    await s.aclose()


def turn(i: int) -> list[BaseMessage]:
    return [HumanMessage(content=f"question {i}"), AIMessage(content=f"answer {i}")]


async def sleep_until(deadline: float) -> None:
    """Let time pass up to `deadline` (TTL tests wait on the clock, not on a condition)."""
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


def texts(messages: list[BaseMessage]) -> list[str]:
    return [m.text for m in messages]


pytestmark = pytest.mark.limits(history_max_messages=10, history_window_messages=4)


async def test_unknown_session_reads_as_empty(store: HistoryStore) -> None:
    history = store.history("nobody")
    assert await history.aget_messages() == []
    assert await history.aget_window(4) == []


async def test_turns_read_back_in_order_and_report_the_count_before(store: HistoryStore) -> None:
    history = store.history("s")
    befores = [await history.aappend_turn(turn(i)) for i in range(3)]
    assert befores == [0, 2, 4]
    assert texts(await history.aget_messages()) == [
        "question 0", "answer 0", "question 1", "answer 1", "question 2", "answer 2",
    ]  # fmt: skip


async def test_window_is_the_last_n_messages_oldest_first(store: HistoryStore) -> None:
    history = store.history("s")
    for i in range(4):
        await history.aappend_turn(turn(i))
    assert texts(await history.aget_window(4)) == [
        "question 2",
        "answer 2",
        "question 3",
        "answer 3",
    ]
    assert len(await history.aget_window(100)) == 8


async def test_cap_keeps_only_the_newest_messages(store: HistoryStore) -> None:
    history = store.history("s")
    for i in range(8):  # 16 messages into a cap of 10
        await history.aappend_turn(turn(i))
    kept = await history.aget_messages()
    assert texts(kept)[0] == "question 3" and texts(kept)[-1] == "answer 7"
    assert len(kept) == 10
    assert await history.aappend_turn(turn(8)) == 10  # stored before: the capped length


async def test_clear_removes_the_session_and_is_idempotent(store: HistoryStore) -> None:
    history = store.history("s")
    await history.aappend_turn(turn(0))
    await store.history("other").aappend_turn(turn(1))
    await history.aclear()
    await history.aclear()
    assert await history.aget_messages() == []
    assert texts(await store.history("other").aget_messages()) == ["question 1", "answer 1"]


async def test_sessions_are_isolated(store: HistoryStore) -> None:
    await store.history("a").aappend_turn(turn(1))
    await store.history("b").aappend_turn(turn(2))
    assert texts(await store.history("a").aget_messages()) == ["question 1", "answer 1"]


@pytest.mark.limits(history_ttl_seconds=1)
async def test_ttl_expires_an_idle_session(store: HistoryStore) -> None:
    history = store.history("s")
    await history.aappend_turn(turn(0))
    assert len(await history.aget_messages()) == 2
    deadline = time.monotonic() + 5
    while await history.aget_messages() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await history.aget_messages() == []


@pytest.mark.limits(history_ttl_seconds=2)
async def test_ttl_slides_on_every_append(store: HistoryStore) -> None:
    history = store.history("s")
    started = time.monotonic()
    await history.aappend_turn(turn(0))
    await sleep_until(started + 1.2)
    await history.aappend_turn(turn(1))  # refreshes the TTL to 2 s from now
    await sleep_until(started + 2.6)  # past the first deadline, before the second
    assert len(await history.aget_messages()) == 4


async def test_every_message_type_round_trips_with_full_fidelity(store: HistoryStore) -> None:
    messages: list[BaseMessage] = [
        SystemMessage(content="be brief", id="sys-1"),
        HumanMessage(content="weather in Paris?", additional_kwargs={"lang": "en"}, name="ada"),
        AIMessage(
            content="",
            tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call-1"}],
            response_metadata={"model": "x", "finish_reason": "tool_calls"},
            usage_metadata={"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
        ),
        ToolMessage(content="18 °C, sunny", tool_call_id="call-1", artifact={"raw": [1, 2]}),
        AIMessage(content=[{"type": "text", "text": "18 °C and sunny ☀"}]),
        ChatMessage(role="critic", content="fine"),
    ]
    history = store.history("fidelity")
    await history.aappend_turn(messages)
    assert await history.aget_messages() == messages


async def test_sync_interface_matches_async(
    store: HistoryStore, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":  # the app's pool is async-only: give the class a sync client too
        sync_client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        assert isinstance(store, RedisStore)
        async_client = store.client
        history: ChatHistory = RedisChatHistory(
            "sync", client=sync_client, async_client=async_client, max_messages=10
        )
    else:
        history = store.history("sync")
    history.add_user_message("hello")
    history.add_ai_message("hi")
    history.add_messages(turn(1))
    assert texts(history.messages) == ["hello", "hi", "question 1", "answer 1"]
    assert texts(history.get_window(2)) == ["question 1", "answer 1"]
    assert history.append_turn(turn(2)) == 4
    assert texts(await history.aget_messages()) == texts(history.messages)
    history.clear()
    assert history.messages == []


def tool_group(i: int) -> list[BaseMessage]:
    """A turn that used a tool: question, tool call, two tool results, answer."""
    calls = [
        {"name": "lookup", "args": {"q": i}, "id": f"c{i}a"},
        {"name": "lookup", "args": {"q": -i}, "id": f"c{i}b"},
    ]
    return [
        HumanMessage(content=f"question {i}"),
        AIMessage(content="", tool_calls=calls),
        ToolMessage(content=f"result {i}a", tool_call_id=f"c{i}a"),
        ToolMessage(content=f"result {i}b", tool_call_id=f"c{i}b"),
        AIMessage(content=f"answer {i}"),
    ]


@pytest.mark.limits(history_max_messages=10, history_window_messages=4)
async def test_a_window_never_starts_with_tool_results_cut_off_from_their_call(
    store: HistoryStore,
) -> None:
    history = store.history("tools")
    await history.aappend_turn(tool_group(1))
    # The last 3 messages begin with a tool result whose AIMessage (the call) is cut off.
    assert texts(await history.aget_window(3)) == ["answer 1"]
    assert texts(await history.aget_window(4)) == ["", "result 1a", "result 1b", "answer 1"]
    assert texts(await history.aget_window(5)) == texts(tool_group(1))


@pytest.mark.limits(history_max_messages=8, history_window_messages=4)
async def test_the_session_cap_never_leaves_an_orphaned_tool_result_first(
    store: HistoryStore,
) -> None:
    history = store.history("capped")
    await history.aappend_turn(tool_group(1))
    await history.aappend_turn(tool_group(2))  # 10 messages, cap 8: the first two are dropped
    whole = await history.aget_messages()
    assert not isinstance(whole[0], ToolMessage)
    assert texts(whole) == ["answer 1", *texts(tool_group(2))]
