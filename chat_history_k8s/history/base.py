"""The history contract every backend implements, and its domain errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, ToolMessage


class HistoryUnavailable(Exception):
    """The history store cannot be reached or refused the operation; nothing was changed
    that the caller was told about. The API maps this to 503 `history_unavailable`.

    `str(exc)` is the detail, for logs (it may name the store's address); `public` is what a
    client may be told, and never names an internal address.
    """

    def __init__(self, detail: str, public: str | None = None) -> None:
        super().__init__(detail)
        self.public = detail if public is None else public

    @classmethod
    def from_redis(cls, exc: BaseException) -> HistoryUnavailable:
        """A redis-py error: its message (often `host:port`) for the logs, its type for clients."""
        kind = type(exc).__name__
        return cls(f"redis: {kind}: {exc}", public=f"redis: {kind}")


def whole_tool_groups(window: list[BaseMessage]) -> list[BaseMessage]:
    """`window` without the tool results at its start whose `AIMessage` (the tool call) a window
    or the per-session cap cut off: every chat model provider rejects an orphaned
    `ToolMessage`, so a window never splits a tool-call group (it may hold fewer messages)."""
    start = 0
    while start < len(window) and isinstance(window[start], ToolMessage):
        start += 1
    return window[start:] if start else window


class ChatHistory(BaseChatMessageHistory, ABC):
    """One session's history, usable by any LangChain code through `BaseChatMessageHistory`.

    On top of that interface, a chat turn needs exactly two operations, and each backend does
    each in one store round trip whatever the history length (sync and native async twins):

    - `get_window(n)` / `aget_window(n)`: the last `n` messages, oldest first (the model's
      context); `n == 0` means all of them; `[]` for an unknown session; never starting with
      a tool result cut off from its tool call (see `whole_tool_groups`);
    - `append_turn(messages)` / `aappend_turn(messages)`: append the messages atomically, apply
      the per-session cap, refresh the TTL; return how many messages were stored before.

    `messages`, `add_messages` and their async twins are defined on top of these. Failures of
    the store raise `HistoryUnavailable`.
    """

    session_id: str

    @abstractmethod
    def get_window(self, n: int) -> list[BaseMessage]: ...

    @abstractmethod
    async def aget_window(self, n: int) -> list[BaseMessage]: ...

    @abstractmethod
    def append_turn(self, messages: Sequence[BaseMessage]) -> int: ...

    @abstractmethod
    async def aappend_turn(self, messages: Sequence[BaseMessage]) -> int: ...

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]  # base: a plain attribute
        return self.get_window(0)

    async def aget_messages(self) -> list[BaseMessage]:
        return await self.aget_window(0)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.append_turn(messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self.aappend_turn(messages)


@dataclass(frozen=True)
class StoreMetric:
    """One metric family a store reports about itself, exported as is by `/metrics`.

    `name` has no `_total` suffix (the exporter adds it to counters); `samples` maps label
    values, in the order of `labels`, to a value (`{(): value}` when there are no labels).
    """

    name: str
    documentation: str
    kind: Literal["gauge", "counter"]
    samples: Mapping[tuple[str, ...], float]
    labels: tuple[str, ...] = field(default=())


class HistoryStore(ABC):
    """Owns a backend's shared state (a connection pool, or the process's own dict) and hands
    out per-session `ChatHistory` objects. Constructors do no I/O.

    Lifecycle: the app calls `start()` once its event loop runs and `aclose()` when it stops.
    """

    backend: str

    @abstractmethod
    def history(self, session_id: str) -> ChatHistory:
        """A handle on one session's history (cheap; does no I/O)."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise `HistoryUnavailable` otherwise."""

    async def start(self) -> None:  # noqa: B027 - a no-op is the right default
        """Begin background upkeep or warm-up, if the backend has any. Returns promptly (within
        the backend's own timeouts), and never fails because the store is unreachable: a
        replica starts, not ready, while its store is down."""

    async def aclose(self) -> None:  # noqa: B027 - a no-op is the right default
        """Stop background upkeep and release connections; the store is unusable afterwards."""

    def size_metrics(self) -> list[StoreMetric]:
        """What this store holds, for `/metrics`; none by default.

        Called on every scrape, so it must be cheap, do no I/O and change nothing: no expiry,
        no eviction, no reordering. Scraping never alters what the store holds.
        """
        return []
