"""The decode cache: what it returns is what a fresh decode returns, and nothing a reader does
to its messages reaches the cache or another reader."""

from __future__ import annotations

import enum
from typing import Any

import orjson
import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
    messages_to_dict,
)

from chat_history_k8s.history import codec
from chat_history_k8s.history.codec import DecodeCache, decode, encode

decode_all = messages_from_dict

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


def _assert_same_as_fresh(got: list[BaseMessage], raw: list[bytes]) -> None:
    fresh = decode(raw)
    assert got == fresh
    assert [type(m) for m in got] == [type(m) for m in fresh]
    assert [m.__dict__ for m in got] == [m.__dict__ for m in fresh]
    assert [m.model_fields_set for m in got] == [m.model_fields_set for m in fresh]
    assert [m.model_dump(exclude_unset=True) for m in got] == [
        m.model_dump(exclude_unset=True) for m in fresh
    ]


def test_a_cached_decode_equals_a_fresh_one_for_every_message_type() -> None:
    raw = [encode(m) for m in MESSAGES]
    cache = DecodeCache(max_messages=64)
    for _ in range(3):  # a miss, then hits
        got = cache.decode(raw)
        assert got == decode(raw) == MESSAGES
        assert messages_to_dict(got) == messages_to_dict(MESSAGES)
        assert [type(m) for m in got] == [type(m) for m in MESSAGES]
        _assert_same_as_fresh(got, raw)
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


class _Mood(enum.StrEnum):
    CALM = "calm"


class _Shout(HumanMessage):
    pass


# Messages a process appends, each read back: the kind the service writes, and edge cases.
KEEPABLE: list[BaseMessage] = [
    HumanMessage(content="hello"),
    HumanMessage(content="x", id="h-1", name="ada"),
    AIMessage(content="You said: hello. I can see 0 earlier messages.", id="lc_run--1-0"),
    SystemMessage(content="be brief"),
    ChatMessage(role="critic", content="fine"),
    ToolMessage(content="18", tool_call_id="call-1"),
]


def _with_enum_content() -> HumanMessage:
    message = HumanMessage(content="x")
    message.content = _Mood.CALM  # assigned unvalidated: a str subclass comes back a plain str
    return message


def _with_int_id() -> HumanMessage:
    message = HumanMessage(content="x")
    message.id = 7  # type: ignore[assignment]  # unvalidated: decoding coerces it to "7"
    return message


# Messages whose stored form may decode to other values or types: never kept.
NOT_KEEPABLE: list[BaseMessage] = [
    _with_enum_content(),
    _Shout(content="HEY"),  # comes back a HumanMessage
    HumanMessage(content="x", additional_kwargs={"lang": "en"}),  # a non-empty container
    AIMessage(content="", tool_calls=[{"name": "n", "args": {}, "id": "c"}]),
    HumanMessage(content="x", extra_field=1),  # an extra field
    *(MESSAGES[i] for i in (1, 3, 4, 5)),  # metadata, tool calls, an artifact, content blocks
]


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes | str]:
    """The stored messages the cache decodes from now on (a miss's decode, fast or full)."""
    decodes: list[bytes | str] = []
    decoded = codec._decoded

    def counted(item: bytes | str) -> tuple[BaseMessage, Any]:
        decodes.append(item)
        return decoded(item)

    monkeypatch.setattr(codec, "_decoded", counted)
    return decodes


def test_a_message_this_process_encoded_is_read_back_without_a_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = DecodeCache(max_messages=64)
    raw = [cache.encode(m) for m in KEEPABLE]
    assert raw == [encode(m) for m in KEEPABLE]
    assert cache.info()["kept"] == len(KEEPABLE)
    decodes = _count_decodes(monkeypatch)
    got = cache.decode(raw)
    assert decodes == []
    monkeypatch.undo()
    _assert_same_as_fresh(got, raw)
    assert cache.info()["kept"] == 0  # moved into the cache proper
    _assert_same_as_fresh(cache.decode(raw), raw)


def test_a_message_that_might_decode_differently_is_not_kept_and_is_decoded() -> None:
    cache = DecodeCache(max_messages=64)
    raw = [cache.encode(m) for m in NOT_KEEPABLE]
    assert raw == [encode(m) for m in NOT_KEEPABLE]
    assert cache.info()["kept"] == 0
    _assert_same_as_fresh(cache.decode(raw), raw)


def test_a_shape_that_decodes_differently_is_found_by_a_real_decode_and_never_kept() -> None:
    cache = DecodeCache(max_messages=64)
    # pydantic warns on the dump; the stored JSON holds 7, decoding gives "7".
    with pytest.warns(UserWarning, match="serialized value may not be as expected"):
        raw = [cache.encode(_with_int_id()) for _ in range(2)]
    assert cache.info()["kept"] == 0
    (got,) = cache.decode(raw[:1])
    assert got.id == "7"
    _assert_same_as_fresh([got], raw[:1])


def test_changing_an_appended_message_afterwards_changes_nothing_read_back() -> None:
    cache = DecodeCache(max_messages=64)
    ai = AIMessage(content="hi", id="lc_run--2-0")
    messages = [HumanMessage(content="hello"), ai]
    raw = [cache.encode(m) for m in messages]
    for message in messages:
        message.content = "changed"
        message.additional_kwargs["x"] = 1
        message.response_metadata["y"] = 2
    ai.tool_calls.append({"name": "n", "args": {}, "id": "c", "type": "tool_call"})
    got = cache.decode(raw)
    assert [m.content for m in got] == ["hello", "hi"]
    _assert_same_as_fresh(got, raw)


def test_kept_messages_are_bounded_oldest_out_first() -> None:
    cache = DecodeCache(max_messages=8)  # keeps at most 2
    raw = [cache.encode(HumanMessage(content=f"m{i}")) for i in range(5)]
    assert cache.info()["kept"] == 2
    assert cache.decode(raw) == decode(raw)
    assert cache.info()["misses"] == 5 and cache.info()["kept"] == 0
    off = DecodeCache(max_messages=0)
    assert off.encode(HumanMessage(content="m")) == encode(HumanMessage(content="m"))
    assert off.info()["kept"] == 0


def test_a_scope_shares_its_messages_between_its_reads_and_with_no_other_scope() -> None:
    raw = [encode(m) for m in MESSAGES]
    cache = DecodeCache(max_messages=64)
    _assert_same_as_fresh(cache.decode(raw, "s1"), raw)  # its first read: cached from the next
    first, again = cache.decode(raw, "s1"), cache.decode(raw, "s1")
    other, unscoped = cache.decode(raw, "s2"), cache.decode(raw)
    for got in (first, again, other, unscoped):
        _assert_same_as_fresh(got, raw)
    # Plain messages are the same objects in every read of s1; the rest are decoded each time.
    shared = [a is b for a, b in zip(first, again, strict=True)]
    assert shared == [m is not None for m in map(codec._template, raw)]
    assert sum(shared) >= 4
    for got in (other, unscoped):
        assert all(a is not b for a, b in zip(first, got, strict=True))


def test_a_scope_reads_back_what_it_appended_without_a_decode_and_no_other_scope_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = DecodeCache(max_messages=64)
    cache.decode([], "s1")
    cache.decode([], "s1")  # read twice: s1's appends are kept from now on
    appended = [m.model_copy(deep=True) for m in KEEPABLE]  # the caller's, changed below
    raw = [cache.encode(m, "s1") for m in appended]
    assert raw == [encode(m) for m in KEEPABLE]
    decodes = _count_decodes(monkeypatch)
    got = cache.decode(raw, "s1")
    assert decodes == []
    assert all(a is not b for a, b in zip(got, appended, strict=True))  # copies, not the caller's
    cache.decode(raw, "s2")
    cache.decode(raw)
    assert decodes == 2 * raw  # kept for s1 only
    monkeypatch.undo()
    _assert_same_as_fresh(got, raw)
    for message in appended[:2]:  # the caller's objects are its own to change
        message.additional_kwargs["x"] = 1
    _assert_same_as_fresh(cache.decode(raw, "s1"), raw)


# Stored forms that are not exactly a message's fields: written by older code or by hand.
ODD_STORED: list[bytes] = [
    b'{"type":"ai","data":{"content":"no other fields","type":"ai"}}',
    b'{"type":"human","data":{"type":"human","content":"fields in another order"}}',
    b'{"type":"human","data":{"content":"x","additional_kwargs":{},"response_metadata":{},'
    b'"type":"human","name":null,"id":null,"mood":"calm"}}',  # an extra field
    b'{"type":"human","data":{"content":"x","additional_kwargs":{},"response_metadata":{},'
    b'"type":"human","name":null,"id":7}}',  # validation makes the id "7"
]


def test_a_miss_decodes_exactly_what_a_full_decode_gives_whatever_was_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = [encode(m) for m in [*MESSAGES, *KEEPABLE, *NOT_KEEPABLE[1:]]] + ODD_STORED
    _assert_same_as_fresh([codec._decoded(raw)[0] for raw in stored], stored)  # shapes checked
    full: list[Any] = []

    def validated_decode(stored: list[Any]) -> list[BaseMessage]:
        full.extend(stored)
        return decode_all(stored)

    monkeypatch.setattr(codec, "messages_from_dict", validated_decode)
    got, plain = zip(*(codec._decoded(raw) for raw in stored), strict=True)
    monkeypatch.undo()
    _assert_same_as_fresh(list(got), stored)
    assert sum(p is not None for p in plain) == len(stored) - len(full)
    # Validated: what holds more than plain values and empty containers, and the odd ones.
    # The others (_Shout's stored form is a plain HumanMessage's) were built as they were stored.
    validated = [MESSAGES[i] for i in (1, 3, 4, 5)] + NOT_KEEPABLE[2:]
    assert full == [
        *messages_to_dict(validated),
        *(orjson.loads(raw) for raw in ODD_STORED),
    ]


def test_a_scope_is_cached_from_its_second_read_on_and_the_scopes_read_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = DecodeCache(max_messages=16)  # remembers 4 scopes
    raw = [cache.encode(m, "s1") for m in KEEPABLE]
    assert cache.info()["kept"] == 0  # s1 never read: nothing kept for it
    decodes = _count_decodes(monkeypatch)
    first = cache.decode(raw, "s1")
    assert decodes == raw and cache.info() == {
        "hits": 0,
        "misses": 0,
        "entries": 0,
        "kept": 0,
        "scopes": 1,
        "window_hits": 0,
        "window_items": 0,
    }
    second = cache.decode(raw, "s1")
    assert decodes == 2 * raw and cache.info()["misses"] == len(raw)  # cached now
    assert all(a is not b for a, b in zip(first, second, strict=True))
    third = cache.decode(raw, "s1")
    assert decodes == 2 * raw and all(a is b for a, b in zip(second, third, strict=True))
    assert cache.info()["window_hits"] == len(raw)  # found by position in the last window
    appended = cache.encode(HumanMessage(content="kept now"), "s1")
    assert cache.info()["kept"] == 1
    assert cache.decode([*raw, appended], "s1")[-1].content == "kept now"
    assert decodes == 2 * raw
    for scope in ("s2", "s3", "s4", "s5"):  # s1, read longest ago, is forgotten
        cache.decode(raw[:1], scope)
    assert cache.info()["scopes"] == 4
    decodes.clear()
    cache.decode(raw, "s1")  # a first read again: decoded, not taken from the cache
    assert decodes == raw
    monkeypatch.undo()
    for got in (first, second, third):
        _assert_same_as_fresh(got, raw)


def test_a_sliding_window_is_found_in_the_last_one_by_its_stored_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cached scope's next window is mostly its last one shifted by a turn: those messages
    come from the last window by position, each only when its stored bytes are equal."""
    cache = DecodeCache(max_messages=64)
    history = [HumanMessage(content=f"m{i}", id=f"id-{i}") for i in range(12)]
    stored = [encode(m) for m in history]
    cache.decode(stored[:6], "s")
    second = cache.decode(stored[:6], "s")  # cached from here on
    hits = cache.info()["hits"]
    # Two messages appended by another process, and the window slides by two.
    decodes = _count_decodes(monkeypatch)
    slid = cache.decode(stored[2:8], "s")
    assert decodes == stored[6:8]  # only the new ones decoded
    assert cache.info()["hits"] == hits  # the others were not even looked up
    assert [m.content for m in slid] == [f"m{i}" for i in range(2, 8)]
    assert all(a is b for a, b in zip(slid[:4], second[2:], strict=True))
    # A stored message replaced in place (same position, other bytes): decoded, not reused.
    changed = encode(HumanMessage(content="m4, edited", id="id-4"))
    again = cache.decode([*stored[2:4], changed, *stored[5:8]], "s")
    assert decodes == [*stored[6:8], changed]
    assert again[2].content == "m4, edited" and again[3] is slid[3]
    # A window that shares nothing with the last one: every item looked up as before.
    assert [m.content for m in cache.decode(stored[9:], "s")] == ["m9", "m10", "m11"]
    monkeypatch.undo()
    _assert_same_as_fresh(again, [*stored[2:4], changed, *stored[5:8]])
    # Another scope never gets this scope's messages, by position or otherwise.
    cache.decode(stored[2:8], "t")
    theirs = cache.decode(stored[2:8], "t")
    assert not set(map(id, theirs)) & set(map(id, slid))


def test_a_sliding_window_of_repeated_messages_starts_where_its_overlap_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same question asked every turn (no id: the same stored bytes each time) must not
    anchor the next window at the question's first copy in the last one: that would match the
    questions by position and look every answer up again."""
    cache = DecodeCache(max_messages=64)
    turns = [
        (HumanMessage(content="same question"), AIMessage(content=f"a{i}", id=f"run-{i}"))
        for i in range(6)
    ]
    stored = [encode(m) for turn in turns for m in turn]
    assert stored[0] == stored[2] == stored[4]
    cache.decode(stored[:8], "s")
    last = cache.decode(stored[:8], "s")  # cached from here on
    hits, window_hits = cache.info()["hits"], cache.info()["window_hits"]
    decodes = _count_decodes(monkeypatch)
    slid = cache.decode(stored[2:10], "s")  # a turn appended by another process
    assert cache.info()["window_hits"] - window_hits == 6  # the whole overlap, by position
    assert all(a is b for a, b in zip(slid[:6], last[2:], strict=True))
    assert decodes == [stored[9]]  # the new answer; the new question is known
    assert cache.info()["hits"] - hits == 1  # the question, looked up
    # Nothing shifted: the window starts where the last one did.
    assert all(a is b for a, b in zip(cache.decode(stored[2:10], "s"), slid, strict=True))
    monkeypatch.undo()
    _assert_same_as_fresh(slid, stored[2:10])
    # A window that does not continue the last one is still right, item by item.
    odd = [stored[0], stored[5], stored[2], stored[3]]
    _assert_same_as_fresh(cache.decode(odd, "s"), odd)


def test_a_message_decoded_on_every_read_is_decoded_again_when_the_window_slides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message holding something mutable (content blocks) is never shared: in the part of
    the window carried over from the last one it is decoded again, and the rest is still
    taken from the last window."""
    cache = DecodeCache(max_messages=64)
    blocks = HumanMessage(content=[{"type": "text", "text": "blocks"}], id="id-b")
    history = [HumanMessage(content="m0", id="id-0"), blocks]
    history += [HumanMessage(content=f"m{i}", id=f"id-{i}") for i in range(2, 8)]
    stored = [encode(m) for m in history]
    cache.decode(stored[:4], "s")
    last = cache.decode(stored[:4], "s")  # cached from here on
    decodes = _count_decodes(monkeypatch)
    slid = cache.decode(stored[1:5], "s")  # the blocks message carried over
    assert decodes == [stored[4]]  # the new one (the blocks message: decode_one, in full)
    assert slid[0] is not last[1] and slid[1] is last[2] and slid[2] is last[3]
    assert cache.decode(stored[1:5], "s")[0] is not slid[0]  # a copy of its own every read
    again = cache.decode(stored[3:7], "s")  # slid out of the window
    assert decodes == [stored[4], stored[5], stored[6]]
    assert again[0] is last[3] and again[1] is slid[3]
    monkeypatch.undo()
    _assert_same_as_fresh(slid, stored[1:5])
    _assert_same_as_fresh(again, stored[3:7])


def test_the_last_windows_hold_at_most_max_messages_items() -> None:
    cache = DecodeCache(max_messages=16)
    stored = [encode(HumanMessage(content=f"m{i}")) for i in range(6)]
    for scope in ("a", "b", "c", "d"):
        for _ in range(2):  # a scope is cached (and its window kept) from its second read on
            cache.decode(stored, scope)
        assert cache.info()["window_items"] <= 16
    assert cache.info()["window_items"] == 12  # two windows of 6: the oldest ones dropped
    cache.decode([*stored, *stored, *stored], "e")  # 18 items: more than all windows may hold
    cache.decode([*stored, *stored, *stored], "e")
    assert cache.info()["window_items"] <= 16
    cache.clear()
    assert cache.info()["window_items"] == 0
