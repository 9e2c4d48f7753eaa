"""How a message is stored in Redis (JSON of `message_to_dict`: full fidelity) and read back,
each stored message decoded once per process.

Most of a sliding window is the messages of the last turn's window: decoding them into
langchain-core message objects (JSON, then pydantic validation) cost as much replica CPU as the
`LRANGE` that fetched them (docs/benchmarks.md). `DecodeCache` keeps the decoded messages by
their *exact stored bytes*, so an entry can never be stale: the same bytes always decode to the
same message, and a changed message is different bytes. Every read gets its own copies, sharing
no mutable object with the cache or with another read; a message that holds anything mutable
beyond empty containers (content blocks, tool calls, metadata) is decoded every time instead.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import orjson
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from chat_history_k8s.history.base import whole_tool_groups

# Entries of the default cache: a 20-message window over ~200 sessions in flight at once. An
# entry is the stored bytes (the key) and one message object: ~2.1 KiB for a turn like the
# benchmark's, so about 8 MiB when full (docs/benchmarks.md measures it).
DEFAULT_MAX_MESSAGES = 4096

_IMMUTABLE = (str, int, float, bool, bytes, type(None))
_set = object.__setattr__  # pydantic models refuse plain attribute setting of their internals


def encode(message: BaseMessage) -> bytes:
    """The stored form: message_to_dict keeps everything (tool calls, ids, metadata)."""
    return orjson.dumps(message_to_dict(message), option=orjson.OPT_NON_STR_KEYS)


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


class DecodeCache:
    """Decoded messages by their exact stored bytes, at most `max_messages` of them (least
    recently used out first). Thread-safe (functools.lru_cache); `max_messages=0` disables it."""

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._template: Any = functools.lru_cache(maxsize=max_messages)(_template)

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
        """Hits, misses and entries held (functools' cache_info)."""
        info = self._template.cache_info()
        return {"hits": info.hits, "misses": info.misses, "entries": info.currsize}

    def clear(self) -> None:
        self._template.cache_clear()


# The process's cache, shared by every RedisChatHistory that is not given one of its own.
DECODED = DecodeCache()
