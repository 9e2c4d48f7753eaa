"""The decode cache: what it returns is what a fresh decode returns, and nothing a reader does
to its messages reaches the cache or another reader."""

from __future__ import annotations

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_to_dict,
)

from chat_history_k8s.history.codec import DecodeCache, decode, encode

MESSAGES: list[BaseMessage] = [
    SystemMessage(content="be brief", id="sys-1"),
    HumanMessage(content="weather in Paris?", additional_kwargs={"lang": "en"}, name="ada"),
    HumanMessage(content="plain"),
    AIMessage(
        content="",
        tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call-1"}],
        response_metadata={"model": "x", "finish_reason": "tool_calls"},
        usage_metadata={"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
    ),
    ToolMessage(content="18 °C, sunny", tool_call_id="call-1", artifact={"raw": [1, 2]}),
    AIMessage(content=[{"type": "text", "text": "18 °C and sunny ☀"}]),
    AIMessage(content="plain answer", id="lc_run--1-0"),
    ChatMessage(role="critic", content="fine"),
]


def test_a_cached_decode_equals_a_fresh_one_for_every_message_type() -> None:
    raw = [encode(m) for m in MESSAGES]
    cache = DecodeCache(max_messages=64)
    for _ in range(3):  # a miss, then hits
        got = cache.decode(raw)
        assert got == decode(raw) == MESSAGES
        assert messages_to_dict(got) == messages_to_dict(MESSAGES)
        assert [type(m) for m in got] == [type(m) for m in MESSAGES]
        fresh = decode(raw)
        assert [m.model_fields_set for m in got] == [m.model_fields_set for m in fresh]
        assert [m.model_dump(exclude_unset=True) for m in got] == [
            m.model_dump(exclude_unset=True) for m in fresh
        ]
    # Plain messages are shared through templates; the rest is decoded on every read.
    assert cache.info()["hits"] == 2 * len(MESSAGES)


def test_changing_a_returned_message_changes_nothing_for_the_next_reader() -> None:
    raw = [encode(m) for m in MESSAGES]
    cache = DecodeCache(max_messages=64)
    first = cache.decode(raw)
    for message in first:
        message.content = "changed"
        message.additional_kwargs["x"] = 1
        message.response_metadata["y"] = 2
        if isinstance(message, AIMessage):
            message.tool_calls.append({"name": "n", "args": {}, "id": "c", "type": "tool_call"})
        if isinstance(message, HumanMessage | AIMessage) and isinstance(message.content, list):
            message.content.append("z")
    second = cache.decode(raw)
    assert second == MESSAGES
    assert all(a is not b for a, b in zip(first, second, strict=True))


def test_the_cache_is_bounded_and_can_be_disabled() -> None:
    cache = DecodeCache(max_messages=4)
    raw = [encode(HumanMessage(content=f"m{i}")) for i in range(10)]
    assert cache.decode(raw) == decode(raw)
    assert cache.info()["entries"] == 4
    off = DecodeCache(max_messages=0)
    assert off.decode(raw) == decode(raw)
    assert off.info()["entries"] == 0


def test_a_window_starting_with_an_orphaned_tool_result_drops_it() -> None:
    raw = [encode(m) for m in MESSAGES[4:]]  # starts with the ToolMessage
    assert DecodeCache().decode(raw) == MESSAGES[5:]
