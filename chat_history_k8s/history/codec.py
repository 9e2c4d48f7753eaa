"""How a message is stored in Redis (JSON of `message_to_dict`: full fidelity) and read back,
each stored message decoded once per process, and none that this process wrote itself.

Most of a sliding window is the messages of the last turn's window: decoding them into
langchain-core message objects (JSON, then pydantic validation) cost as much replica CPU as the
`LRANGE` that fetched them (docs/benchmarks.md). `DecodeCache` keeps the decoded messages by
their *exact stored bytes*, so an entry can never be stale: the same bytes always decode to the
same message, and a changed message is different bytes. Every read gets its own copies, sharing
no mutable object with the cache or with another read; a message that holds anything mutable
beyond empty containers (content blocks, tool calls, metadata) is decoded every time instead.

A process also knows the messages it appends: `DecodeCache.encode` keeps the message it just
encoded (a copy of it, when it is one a template can share) under its stored bytes, so the
replica that wrote a turn does not decode it when it reads the window next time. That copy is
what decoding those bytes would give. Only messages of exact built-in field types (str, int,
bool, None, finite float) and empty containers are kept, and only once a message of the same
shape (class, field names and value types) was decoded and found equal field by field to its
kept copy: validation may still change a value on decode (an `id` assigned as an int comes back
a str), and such a shape is never kept (tests/history/test_codec.py).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable
from typing import Any

import orjson
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from chat_history_k8s.history.base import whole_tool_groups

# Entries of the default cache: a 20-message window over ~200 sessions in flight at once. An
# entry is the stored bytes (the key) and one message object: ~2.1 KiB for a turn like the
# benchmark's, so about 8 MiB when full (docs/benchmarks.md measures it).
DEFAULT_MAX_MESSAGES = 4096

_IMMUTABLE = (str, int, float, bool, bytes, type(None))
# What a message kept from `encode` may hold: types whose JSON round trip gives the same value of
# the same type (exactly these: a str subclass such as an enum member comes back a plain str).
_ROUND_TRIP = frozenset({str, int, bool, type(None)})
# The classes `messages_from_dict` gives back for their own stored type (a subclass of one of
# them would come back as its base class, so it is never kept).
_KEPT_CLASSES = frozenset({HumanMessage, AIMessage, SystemMessage, ChatMessage, ToolMessage})
_set = object.__setattr__  # pydantic models refuse plain attribute setting of their internals


def encode(message: BaseMessage) -> bytes:
    """The stored form: message_to_dict keeps everything (tool calls, ids, metadata)."""
    return _dumps(message_to_dict(message))


def _dumps(stored: dict[str, Any]) -> bytes:
    return orjson.dumps(stored, option=orjson.OPT_NON_STR_KEYS)


def decode_one(raw: bytes | str) -> BaseMessage:
    return messages_from_dict([orjson.loads(raw)])[0]


def decode(raw: Iterable[bytes | str]) -> list[BaseMessage]:
    """A window as stored (oldest first) to messages, decoding every one."""
    return whole_tool_groups(messages_from_dict([orjson.loads(item) for item in raw]))


class _Template:
    """A decoded message and the names of its empty containers, which every copy gets afresh:
    with those replaced, a shallow copy shares only immutable values with the template."""

    __slots__ = ("empties", "message")

    def __init__(self, message: BaseMessage, empties: tuple[tuple[str, type], ...]) -> None:
        self.message = message
        self.empties = empties

    def copy(self) -> BaseMessage:
        """What pydantic's `__copy__` does, without its four `copy.copy` dispatches (half the
        cost of a cache hit): a new `__dict__` with fresh empty containers, a new fields set.
        `_template` admitted only messages with no extra fields and no private attributes."""
        message = self.message
        fresh = object.__new__(type(message))
        state = message.__dict__.copy()
        for name, kind in self.empties:
            state[name] = kind()
        _set(fresh, "__dict__", state)
        _set(fresh, "__pydantic_fields_set__", set(message.__pydantic_fields_set__))
        _set(fresh, "__pydantic_extra__", None if message.__pydantic_extra__ is None else {})
        _set(fresh, "__pydantic_private__", None if message.__pydantic_private__ is None else {})
        return fresh


def _template(raw: bytes | str) -> _Template | None:
    """The template of a message that can be shared safely, None for one that cannot."""
    message = decode_one(raw)
    empties = []
    for name, value in message.__dict__.items():
        if isinstance(value, _IMMUTABLE):
            continue
        if type(value) in (dict, list) and not value:
            empties.append((name, type(value)))
            continue
        return None  # e.g. content blocks, tool calls, metadata: decoded on every read
    if message.__pydantic_extra__ or message.__pydantic_private__:
        return None
    return _Template(message, tuple(empties))


# Shapes of messages (class, then each field's name and value type) and whether a message of
# that shape decodes to what `_template_of` keeps: checked once each, by a real decode.
_SHAPES: dict[tuple[Any, ...], bool] = {}
_MAX_SHAPES = 256  # a handful in practice; past this, an unseen shape is not kept


def _template_of(message: BaseMessage, data: dict[str, Any], raw: bytes) -> _Template | None:
    """The template `_template(raw)` would build, made from `message` itself (no decode), or
    None when its stored form `raw` might decode to anything else. `data` is its stored fields
    (`message_to_dict(message)["data"]`): decoding sets exactly those."""
    if (
        type(message) not in _KEPT_CLASSES
        or message.__pydantic_extra__
        or message.__pydantic_private__
        or message.__dict__.keys() != data.keys()
    ):
        return None
    state = message.__dict__.copy()
    shape: list[Any] = [type(message)]
    empties = []
    for name, value in state.items():
        kind = type(value)
        shape += (name, kind)
        if kind in _ROUND_TRIP or (kind is float and math.isfinite(value)):
            continue
        if kind in (dict, list) and not value:
            empties.append((name, kind))
            state[name] = kind()  # not the caller's container: it may fill it later
            continue
        return None
    key = tuple(shape)
    same = _SHAPES.get(key)
    if same is False:
        return None
    kept = object.__new__(type(message))
    _set(kept, "__dict__", state)
    _set(kept, "__pydantic_fields_set__", set(data))
    _set(kept, "__pydantic_extra__", None if message.__pydantic_extra__ is None else {})
    _set(kept, "__pydantic_private__", None if message.__pydantic_private__ is None else {})
    if same is None:
        same = _decodes_to(raw, kept)
        if len(_SHAPES) < _MAX_SHAPES:
            _SHAPES[key] = same
    return _Template(kept, tuple(empties)) if same else None


def _decodes_to(raw: bytes, kept: BaseMessage) -> bool:
    """Whether decoding `raw` gives `kept`: same class, fields, value types and fields set."""
    decoded = decode_one(raw)
    return (
        type(decoded) is type(kept)
        and decoded.__dict__ == kept.__dict__
        and all(type(decoded.__dict__[k]) is type(v) for k, v in kept.__dict__.items())
        and decoded.__pydantic_fields_set__ == kept.__pydantic_fields_set__
        and decoded.__pydantic_extra__ == kept.__pydantic_extra__
        and decoded.__pydantic_private__ == kept.__pydantic_private__
    )


class DecodeCache:
    """Decoded messages by their exact stored bytes, at most `max_messages` of them (least
    recently used out first), plus up to `max_messages // 4` messages this process encoded and
    nobody has read yet (`encode`; oldest out first). Thread-safe (functools.lru_cache, a lock
    for the kept ones); `max_messages=0` disables both."""

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._max_kept = max_messages // 4
        self._kept: dict[bytes, _Template] = {}
        self._kept_lock = threading.Lock()
        kept = self._kept

        def template(raw: bytes | str) -> _Template | None:
            found = kept.pop(raw, None)  # type: ignore[arg-type]  # a str key is never there
            return found if found is not None else _template(raw)

        self._template: Any = functools.lru_cache(maxsize=max_messages)(template)

    def encode(self, message: BaseMessage) -> bytes:
        """`encode(message)`, and the message kept under those bytes (when a template can share
        it), so this process's next read of them decodes nothing: the replica that appended a
        turn reads it back for free. A message never read is dropped after `max_messages // 4`
        newer ones (about 2.4 MiB for the default, docs/benchmarks.md)."""
        stored = message_to_dict(message)
        raw = _dumps(stored)
        if self._max_kept:
            template = _template_of(message, stored["data"], raw)
            if template is not None:
                # The key a copy: orjson's own bytes object keeps its ~4 KiB growth buffer.
                key = bytes(memoryview(raw))
                with self._kept_lock:
                    if len(self._kept) >= self._max_kept:
                        del self._kept[next(iter(self._kept))]
                    self._kept[key] = template
        return raw

    def decode(self, raw: Iterable[bytes | str]) -> list[BaseMessage]:
        """The same messages as `decode(raw)`, each a copy of its own."""
        if not self.max_messages:
            return decode(raw)
        out = []
        for item in raw:
            template = self._template(item)
            out.append(decode_one(item) if template is None else template.copy())
        return whole_tool_groups(out)

    def info(self) -> dict[str, int]:
        """Hits, misses and entries held (functools' cache_info), and the encoded messages kept
        and not yet read (a miss that finds one decodes nothing)."""
        info = self._template.cache_info()
        return {
            "hits": info.hits,
            "misses": info.misses,
            "entries": info.currsize,
            "kept": len(self._kept),
        }

    def clear(self) -> None:
        with self._kept_lock:
            self._kept.clear()
        self._template.cache_clear()


# The process's cache, shared by every RedisChatHistory that is not given one of its own.
DECODED = DecodeCache()
