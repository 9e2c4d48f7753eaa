"""How a message is stored in Redis (JSON of `message_to_dict`: full fidelity) and read back,
each stored message decoded once per session and process.

Most of a sliding window is the messages of the last turn's window: decoding them into
langchain-core message objects (JSON, then pydantic validation) cost as much replica CPU as the
`LRANGE` that fetched them (docs/benchmarks.md). `DecodeCache` keeps the decoded messages by
session and *exact stored bytes*, so an entry can never be stale: the same bytes always decode
to the same message, and a changed message is different bytes.

What a reader gets is shared the way the memory backend shares its stored messages: reads of
one session may get the same message objects, reads of different sessions never do (even of
equal bytes). A message some reader changed (a field set, a container filled) is never handed
out again: the next read of it decodes the bytes afresh. Only messages whose fields are all
strings, None or empty containers are shared; one holding anything else (content blocks, tool
calls, metadata) is decoded on every read, as a change inside it could not be seen. Equal
messages of one session (the same bytes, e.g. a repeated "yes" with no id) are one object.
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


def encode(message: BaseMessage) -> bytes:
    """The stored form: message_to_dict keeps everything (tool calls, ids, metadata)."""
    return orjson.dumps(message_to_dict(message), option=orjson.OPT_NON_STR_KEYS)


def decode_one(raw: bytes | str) -> BaseMessage:
    return messages_from_dict([orjson.loads(raw)])[0]


def decode(raw: Iterable[bytes | str]) -> list[BaseMessage]:
    """A window as stored (oldest first) to messages, decoding every one."""
    return whole_tool_groups(messages_from_dict([orjson.loads(item) for item in raw]))


class _Shared:
    """A session's decoded message, and its fields' values as decoded (`values`, with a fresh
    empty container, never handed out, for each of its empty containers) and fields set.

    The message is intact, as decoded, while its values equal `values` (no field set to another
    string, no container filled: every value is a `str`, None or an empty container, so nothing
    else can change it), its fields set is the same, and it gained no attribute (pydantic keeps
    those in `__pydantic_extra__`). The state is one tuple, replaced whole: threads reading one
    session never see half of one."""

    __slots__ = ("state",)

    def __init__(self, message: BaseMessage) -> None:
        self.reset(message)

    def reset(self, message: BaseMessage) -> None:
        values = tuple(_EMPTY.get(type(v), v) for v in message.__dict__.values())
        fields = frozenset(message.__pydantic_fields_set__)
        self.state = (message, values, _FIELDS.setdefault(fields, fields))


# What a shared message's empty containers are compared with (never handed out, never changed),
# and its fields sets, one object per distinct set: what an entry holds beyond its message is
# one tuple of references (docs/benchmarks.md measures an entry).
_EMPTY: dict[type, Any] = {dict: {}, list: []}
_FIELDS: dict[frozenset[str], frozenset[str]] = {}


def _shareable(message: BaseMessage) -> bool:
    """Whether `message` can be shared: every value a `str`, None or an empty container (a
    change inside anything else could not be seen), no extra or private attributes."""
    for value in message.__dict__.values():
        kind = type(value)
        if not (kind is str or value is None or (kind in (dict, list) and not value)):
            return False  # e.g. content blocks, tool calls, metadata: decoded on every read
    return not message.__pydantic_extra__ and not message.__pydantic_private__


def _entry(session: str, raw: bytes | str) -> _Shared | None:
    """A new cache entry: the shared message of `session` stored as `raw`, or None (decoded
    on every read) for a message that cannot be shared. `session` is part of the cache's key
    only: two sessions storing the same bytes get an entry each."""
    message = decode_one(raw)
    return _Shared(message) if _shareable(message) else None


class DecodeCache:
    """Decoded messages by session and exact stored bytes, at most `max_messages` of them (least
    recently used out first). Thread-safe (functools.lru_cache, one tuple per entry's state);
    `max_messages=0` disables it."""

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._entry: Any = functools.lru_cache(maxsize=max_messages)(_entry)

    def decode(self, raw: Iterable[bytes | str], session: str) -> list[BaseMessage]:
        """The same messages as `decode(raw)`: `session`'s shared ones where they are intact,
        fresh decodes otherwise (`session` names whose reads may share objects: the key)."""
        if not self.max_messages:
            return decode(raw)
        out = []
        for item in raw:
            entry = self._entry(session, item)
            if entry is None:
                out.append(decode_one(item))
                continue
            message, values, fields = entry.state
            if (
                tuple(message.__dict__.values()) != values
                or message.__pydantic_fields_set__ != fields
                or message.__pydantic_extra__
                or message.__pydantic_private__
            ):
                # A reader changed it: never handed out again, a fresh decode takes its place.
                message = decode_one(item)
                entry.reset(message)
            out.append(message)
        return whole_tool_groups(out)

    def info(self) -> dict[str, int]:
        """Hits, misses and entries held (functools' cache_info)."""
        info = self._entry.cache_info()
        return {"hits": info.hits, "misses": info.misses, "entries": info.currsize}

    def clear(self) -> None:
        self._entry.cache_clear()


# The process's cache, shared by every RedisChatHistory that is not given one of its own.
DECODED = DecodeCache()
