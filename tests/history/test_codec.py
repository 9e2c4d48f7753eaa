"""The decode cache: what it returns is what a fresh decode returns; reads of one session may
share message objects, reads of different sessions never do, and a message a reader changed is
never handed out again."""

from __future__ import annotations

import pytest
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
        got = cache.decode(raw, "s1")
        assert got == decode(raw) == MESSAGES
        assert messages_to_dict(got) == messages_to_dict(MESSAGES)
        assert [type(m) for m in got] == [type(m) for m in MESSAGES]
        fresh = decode(raw)
        assert [m.model_fields_set for m in got] == [m.model_fields_set for m in fresh]
        assert [m.model_dump(exclude_unset=True) for m in got] == [
            m.model_dump(exclude_unset=True) for m in fresh
        ]
    assert cache.info()["hits"] == 2 * len(MESSAGES)


def test_reads_of_one_session_share_plain_messages_and_decode_the_others_afresh() -> None:
    raw = [encode(m) for m in MESSAGES]
    cache = DecodeCache(max_messages=64)
    first, second = cache.decode(raw, "s1"), cache.decode(raw, "s1")
    # Plain messages (strings, None, empty containers) are shared, as the memory backend shares
    # its stored ones; content blocks, tool calls and metadata are decoded on every read.
    shared = [a is b for a, b in zip(first, second, strict=True)]
    assert shared == [True, False, True, False, False, False, True, True]
    assert second == MESSAGES


def test_sessions_storing_the_same_bytes_never_share_a_message() -> None:
    raw = [encode(m) for m in MESSAGES]
    cache = DecodeCache(max_messages=64)
    one, other = cache.decode(raw, "s1"), cache.decode(raw, "s2")
    assert all(a is not b for a, b in zip(one, other, strict=True))
    one[0].content = "changed in s1"
    assert cache.decode(raw, "s2") == MESSAGES


def change(message: BaseMessage, how: str) -> None:
    if how == "field":
        message.content = "changed"
    elif how == "field to an equal-length string":
        message.content = "x" * len(message.text)
    elif how == "container":
        message.additional_kwargs["x"] = 1
    elif how == "other container":
        message.response_metadata["y"] = 2
    elif how == "attribute":
        setattr(message, "extra_thing", 1)  # noqa: B010 - pydantic keeps it in __pydantic_extra__
    elif how == "fields set":
        message.__pydantic_fields_set__.discard("name")  # changes model_dump(exclude_unset=True)
    elif how == "list" and isinstance(message, AIMessage):
        message.tool_calls.append({"name": "n", "args": {}, "id": "c", "type": "tool_call"})


@pytest.mark.parametrize(
    "how",
    [
        "field",
        "field to an equal-length string",
        "container",
        "other container",
        "attribute",
        "fields set",
        "list",
    ],
)
def test_a_message_a_reader_changed_is_never_handed_out_again(how: str) -> None:
    plain = [HumanMessage(content="plain"), AIMessage(content="plain answer", id="lc_run--1-0")]
    raw = [encode(m) for m in plain]
    cache = DecodeCache(max_messages=64)
    dumps = [m.model_dump(exclude_unset=True) for m in decode(raw)]
    first = cache.decode(raw, "s1")
    for message in first:
        change(message, how)
    changed = [how != "list" or isinstance(m, AIMessage) for m in first]
    second = cache.decode(raw, "s1")
    assert second == plain
    assert [m.model_dump(exclude_unset=True) for m in second] == dumps
    assert [a is not b for a, b in zip(first, second, strict=True)] == changed
    third = cache.decode(raw, "s1")  # the fresh decodes are shared from now on
    assert all(a is b for a, b in zip(second, third, strict=True))


def test_the_cache_is_bounded_and_can_be_disabled() -> None:
    cache = DecodeCache(max_messages=4)
    raw = [encode(HumanMessage(content=f"m{i}")) for i in range(10)]
    assert cache.decode(raw, "s1") == decode(raw)
    assert cache.info()["entries"] == 4
    off = DecodeCache(max_messages=0)
    assert off.decode(raw, "s1") == decode(raw)
    assert off.info()["entries"] == 0


def test_a_window_starting_with_an_orphaned_tool_result_drops_it() -> None:
    raw = [encode(m) for m in MESSAGES[4:]]  # starts with the ToolMessage
    assert DecodeCache().decode(raw, "s1") == MESSAGES[5:]
