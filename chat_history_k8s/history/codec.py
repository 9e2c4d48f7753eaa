"""How a message is stored in Redis (JSON of `message_to_dict`: full fidelity) and read back,
each stored message decoded once per process, and none that this process wrote itself.

Most of a sliding window is the messages of the last turn's window: decoding them into
langchain-core message objects (JSON, then pydantic validation) cost as much replica CPU as the
`LRANGE` that fetched them (docs/benchmarks.md). `DecodeCache` keeps the decoded messages by
their *exact stored bytes*, so an entry can never be stale: the same bytes always decode to the
same message, and a changed message is different bytes. By default every read gets its own
copies, sharing no mutable object with the cache or with another read; a message that holds
anything mutable beyond empty containers (content blocks, tool calls, metadata) is decoded every
time instead.

A read may instead name a *scope* (a session's key): it then gets the cached messages
themselves, shared by every read of that scope in this process and by no other scope. That is
what the memory backend's reads get (its stored objects), for a caller that never changes a
message it read: the service's turn, which hands the window to the model and drops it
(docs/benchmarks.md measures what no copy per read saves). A scope is cached from its second
read on: its first read decodes what it reads without caching it, so a session read once (a
one-off, a replica's first turn of a session) costs no cache work that nothing would use.

A process also knows the messages it appends: `DecodeCache.encode` keeps the message it just
encoded (a copy of it, when it is one a template can share) under its stored bytes, so the
replica that wrote a turn does not decode it when it reads the window next time. That copy is
what decoding those bytes would give. Only *plain* messages are kept: exact built-in field
types (str, int, bool, None, finite float) and empty containers, of a shape (class, field names
and value types) that a real decode has shown to come back field by field as stored:
validation may still change a value on decode (an `id` stored as an int comes back a str), and
such a shape is never trusted (tests/history/test_codec.py).

The same check makes a miss cheaper: a stored plain message of a trusted shape becomes a
message holding its stored fields as they are, without pydantic's validation (what the
service writes is plain: text, ids, empty containers); anything else is decoded in full.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable
from typing import Any, Literal

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
# The classes `messages_from_dict` gives back for their own stored type, by that type (a
# subclass of one of them would come back as its base class, so it is never kept).
_CLASSES: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "system": SystemMessage,
    "chat": ChatMessage,
    "tool": ToolMessage,
}
_KEPT_CLASSES = frozenset(_CLASSES.values())
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
    message, empties = _decoded(raw)
    if empties is not None:
        return _Template(message, empties)
    found = []
    for name, value in message.__dict__.items():
        if isinstance(value, _IMMUTABLE):
            continue
        if type(value) in (dict, list) and not value:
            found.append((name, type(value)))
            continue
        return None  # e.g. content blocks, tool calls, metadata: decoded on every read
    if message.__pydantic_extra__ or message.__pydantic_private__:
        return None
    return _Template(message, tuple(found))


# Plain shapes. A shape is a message class, its stored field names and their value types; a
# message of it is *plain* when its values are of types whose JSON round trip gives them back
# (`_ROUND_TRIP`, finite floats) and its containers are empty, and when a real decode of one
# such message gave back its stored fields unchanged: its empty containers (name, type), or
# False for a shape that is never plain. Checked once per shape, remembered.
Empties = tuple[tuple[str, type], ...]
_PLANS: dict[tuple[Any, ...], Empties | Literal[False]] = {}
_MAX_SHAPES = 256  # a handful in practice; past this, an unseen shape is decoded in full
_PLAIN_KINDS = _ROUND_TRIP | {float, dict, list}


def _plain(cls: type[BaseMessage], data: dict[str, Any], raw: bytes | str) -> Empties | None:
    """The empty containers (name, type) of a plain message of `cls` whose stored fields are
    `data` and stored form `raw`; None when it is not plain (tests/history/test_codec.py). A
    message that is not plain itself (a container not empty) never decides its shape's plan."""
    shape = (cls, tuple(data), tuple(map(type, data.values())))
    plan = _PLANS.get(shape)
    if plan is False:
        return None
    empties = _containers(shape) if plan is None else plan
    if empties is None:  # a value whose JSON round trip may not give it back
        _remember(shape, False)
        return None
    for name, _ in empties:
        if data[name]:
            return None
    if float in shape[2] and not all(math.isfinite(v) for v in data.values() if type(v) is float):
        return None  # orjson writes NaN as null: it would not come back
    if plan is None:
        plan = _remember(shape, empties if _decodes_unchanged(cls, raw, data) else False)
    return None if plan is False else plan


def _containers(shape: tuple[Any, ...]) -> Empties | None:
    """The containers (name, type) of `shape`, or None when one of its value types is not
    `_PLAIN_KINDS`."""
    _, names, kinds = shape
    if not all(kind in _PLAIN_KINDS for kind in kinds):
        return None
    return tuple((n, k) for n, k in zip(names, kinds, strict=True) if k in (dict, list))


def _remember(shape: tuple[Any, ...], plan: Empties | Literal[False]) -> Empties | Literal[False]:
    if len(_PLANS) < _MAX_SHAPES:
        _PLANS[shape] = plan
    return plan


def _decodes_unchanged(cls: type[BaseMessage], raw: bytes | str, data: dict[str, Any]) -> bool:
    """Whether a real decode of `raw` gives back its stored fields `data` unchanged: the same
    values of the same types in the same order, all set, no extras. Validation may change a
    value (an `id` stored as an int comes back a str)."""
    decoded = decode_one(raw)
    fields = decoded.__dict__
    return (
        type(decoded) is cls
        and list(fields.items()) == list(data.items())
        and all(type(fields[name]) is type(value) for name, value in data.items())
        and decoded.__pydantic_fields_set__ == data.keys()
        and decoded.__pydantic_extra__ == {}
        and decoded.__pydantic_private__ is None
    )


def _built(cls: type[BaseMessage], fields: dict[str, Any]) -> BaseMessage:
    """A message of `cls` holding `fields` as they are, all set, no extras (the kept classes
    allow extras, so theirs is an empty dict): what decoding gives for a plain message, without
    pydantic's validation."""
    message = object.__new__(cls)
    _set(message, "__dict__", fields)
    _set(message, "__pydantic_fields_set__", set(fields))
    _set(message, "__pydantic_extra__", {})
    _set(message, "__pydantic_private__", None)
    return message


def _decoded(raw: bytes | str) -> tuple[BaseMessage, Empties | None]:
    """`decode_one(raw)`, and for a plain message (`_plain`) its empty containers, else None.
    A plain message is its stored fields as they are, not validated (half the cost of a miss)."""
    stored = orjson.loads(raw)
    kind = stored.get("type") if type(stored) is dict else None
    cls = _CLASSES.get(kind) if type(kind) is str else None
    data = stored.get("data") if cls is not None else None
    if cls is not None and type(data) is dict:
        empties = _plain(cls, data, raw)
        if empties is not None:
            return _built(cls, data), empties
    return messages_from_dict([stored])[0], None


def _template_of(message: BaseMessage, data: dict[str, Any], raw: bytes) -> _Template | None:
    """The template `_template(raw)` would build, made from `message`'s stored fields `data`
    (`message_to_dict(message)["data"]`: a dict of its own, containers included) without a
    decode, or None when `raw` might decode to anything else than `message`."""
    cls = type(message)
    if (
        cls not in _KEPT_CLASSES
        or message.__pydantic_extra__
        or message.__pydantic_private__
        or message.__dict__ != data
    ):
        return None
    empties = _plain(cls, data, raw)
    return None if empties is None else _Template(_built(cls, data), empties)


def _start_in(last: list[bytes | str], items: list[bytes | str]) -> int:
    """Where the window `items` starts in the last window `last` of its scope, -1 for nowhere
    (then every item is looked up). A sliding window is the last one shifted by the messages
    appended since, so it starts at an item equal to its first whose overlap with it ends at
    `last`'s last item. Equal stored messages are common (a question asked again, with no id):
    the first item equal to the window's first may be an earlier copy of it, which would match
    only the repeated messages by position. The caller compares every item it takes by
    position, so a wrong start costs lookups, never a wrong message."""
    if not items or not last:
        return -1
    first, fallback, at = items[0], -1, 0
    while True:
        try:
            start = last.index(first, at)
        except ValueError:
            return fallback
        end = len(last) - 1 - start  # where `last`'s last item is in `items`
        if end >= len(items) or items[end] == last[-1]:
            return start
        if fallback < 0:
            fallback = start
        at = start + 1


def _put_bounded(entries: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """`entries[key] = value`, the oldest entry dropped first when `limit` are held."""
    if len(entries) >= limit:
        del entries[next(iter(entries))]
    entries[key] = value


class DecodeCache:
    """Decoded messages by their exact stored bytes, at most `max_messages` of them (least
    recently used out first), plus up to `max_messages // 4` messages this process encoded and
    nobody has read yet (`encode`; oldest out first). Thread-safe (functools.lru_cache, a lock
    for the kept ones and the scopes seen); `max_messages=0` disables all of it.

    A scope is cached from its second read in this process on: its first read decodes without
    caching anything, and its appends are kept only once it has been read twice. A session read
    once (a one-off, or the first turn a replica serves of a session) then costs no cache work
    that no later read would use. The last `max_messages // 4` scopes read are remembered (oldest
    out first; ~0.15 MiB when full, docs/benchmarks.md).

    A cached scope's last window is remembered too: its stored items and the messages returned
    for them. A sliding window is mostly the last one shifted by a turn, so the next read finds
    those by position, each confirmed by comparing its stored bytes (equal bytes, the same
    message), instead of hashing every item's ~500 bytes to look it up: the lookups were the
    main cost of a cached read. Windows hold at most `max_messages` items across scopes (oldest
    scope out first), messages the cache holds anyway unless it has dropped them since."""

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._max_kept = max_messages // 4
        # Keys: the stored bytes, or (scope, stored bytes) for a scope's shared messages.
        self._kept: dict[Any, _Template] = {}
        self._kept_lock = threading.Lock()
        # The scopes read: False once, True from their second read on (cached from then).
        self._scopes: dict[str, bool] = {}
        self._max_scopes = max(1, max_messages // 4)
        # Each cached scope's last window: its stored items and the shared message for each
        # (None for one decoded on every read), oldest scope first; items held in all of them.
        self._windows: dict[str, tuple[list[bytes | str], list[BaseMessage | None]]] = {}
        self._window_items = 0
        self._window_hits = 0
        kept = self._kept

        def template(key: bytes | str | tuple[str, bytes | str]) -> _Template | None:
            found = kept.pop(key, None)  # a str is never there: encode keeps bytes
            if found is not None:
                return found
            return _template(key[1] if type(key) is tuple else key)  # type: ignore[arg-type]  # narrowed by the type check

        self._template: Any = functools.lru_cache(maxsize=max_messages)(template)

    def encode(self, message: BaseMessage, scope: str | None = None) -> bytes:
        """`encode(message)`, and the message kept under those bytes (when a template can share
        it), so this process's next read of them (in `scope`, when given) decodes nothing: the
        replica that appended a turn reads it back for free. What is kept is a copy, never the
        caller's object. A message never read is dropped after `max_messages // 4` newer ones
        (about 2.4 MiB for the default, docs/benchmarks.md)."""
        stored = message_to_dict(message)
        raw = _dumps(stored)
        if self._max_kept and (scope is None or self._scopes.get(scope)):
            template = _template_of(message, stored["data"], raw)
            if template is not None:
                # The key a copy: orjson's own bytes object keeps its ~4 KiB growth buffer.
                key = bytes(memoryview(raw))
                with self._kept_lock:
                    _put_bounded(
                        self._kept, key if scope is None else (scope, key), template, self._max_kept
                    )
        return raw

    def decode(self, raw: Iterable[bytes | str], scope: str | None = None) -> list[BaseMessage]:
        """The same messages as `decode(raw)`. Without `scope`, each a copy of its own. With
        `scope`, the cached messages themselves, shared by every read of that scope in this
        process and never by another scope's: the caller must not change them. A scope's first
        read (that this cache remembers) gets messages decoded for it alone and caches none."""
        if not self.max_messages:
            return decode(raw)
        template_for = self._template
        out = []
        if scope is None:
            for item in raw:
                template = template_for(item)
                out.append(decode_one(item) if template is None else template.copy())
        elif not self._read_before(scope):
            return whole_tool_groups([_decoded(item)[0] for item in raw])  # cache nothing yet
        else:
            items = list(raw)  # remembered, with the stored bytes objects already held
            last_items, last_messages = self._windows.get(scope) or ([], [])
            start = _start_in(last_items, items)
            shared: list[BaseMessage | None] = []
            hits = 0
            for i, item in enumerate(items):
                j = start + i
                if start >= 0 and j < len(last_items) and last_items[j] == item:
                    message = last_messages[j]
                    if message is not None:
                        hits += 1
                        out.append(message)
                        shared.append(message)
                        items[i] = last_items[j]  # one stored bytes object held, not two
                        continue
                template = template_for((scope, item))
                message = None if template is None else template.message
                out.append(decode_one(item) if message is None else message)
                shared.append(message)
            self._remember_window(scope, items, shared, hits)
        return whole_tool_groups(out)

    def _remember_window(
        self, scope: str, items: list[bytes | str], shared: list[BaseMessage | None], hits: int
    ) -> None:
        """`scope`'s last window is `items` and their `shared` messages now (the oldest scope's
        dropped while windows hold more than `max_messages` items)."""
        with self._kept_lock:
            self._window_hits += hits
            previous = self._windows.pop(scope, None)
            if previous is not None:
                self._window_items -= len(previous[0])
            if len(items) > self.max_messages:
                return
            self._windows[scope] = (items, shared)
            self._window_items += len(items)
            while self._window_items > self.max_messages:
                dropped = self._windows.pop(next(iter(self._windows)))
                self._window_items -= len(dropped[0])

    def _read_before(self, scope: str) -> bool:
        """Whether `scope` was read before in this process; it has been now."""
        if self._scopes.get(scope):
            return True
        with self._kept_lock:
            if scope in self._scopes:
                self._scopes[scope] = True
                return True
            _put_bounded(self._scopes, scope, False, self._max_scopes)
            return False

    def info(self) -> dict[str, int]:
        """Hits, misses and entries held (functools' cache_info), the encoded messages kept
        and not yet read (a miss that finds one decodes nothing), and the scopes remembered."""
        info = self._template.cache_info()
        return {
            "hits": info.hits,
            "misses": info.misses,
            "entries": info.currsize,
            "kept": len(self._kept),
            "scopes": len(self._scopes),
            "window_hits": self._window_hits,
            "window_items": self._window_items,
        }

    def clear(self) -> None:
        with self._kept_lock:
            self._kept.clear()
            self._scopes.clear()
            self._windows.clear()
            self._window_items = 0
        self._template.cache_clear()


# The process's cache, shared by every RedisChatHistory that is not given one of its own.
DECODED = DecodeCache()
