"""The history contract every backend implements, and its domain errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage


class HistoryUnavailable(Exception):
    """The history store cannot be reached or refused the operation; nothing was changed
    that the caller was told about. The API maps this to 503 `history_unavailable`."""


class ChatHistory(BaseChatMessageHistory, ABC):
    """One session's history, usable by any LangChain code through `BaseChatMessageHistory`.

    On top of that interface, a chat turn needs exactly two operations, and each backend does
    each in one store round trip whatever the history length:

    - `aget_window(n)`: the last `n` messages, oldest first (the model's context);
    - `aappend_turn(messages)`: append the turn's messages atomically, apply the per-session cap
      and refresh the TTL; returns how many messages were stored before the turn.

    Failures of the store raise `HistoryUnavailable`.
    """

    session_id: str

    @abstractmethod
    async def aget_window(self, n: int) -> list[BaseMessage]:
        """The last `n` messages of the session, oldest first; `[]` for an unknown session."""

    @abstractmethod
    async def aappend_turn(self, messages: Sequence[BaseMessage]) -> int:
        """Append `messages` as one atomic unit; return the message count before the append."""

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self.aappend_turn(messages)


class HistoryStore(ABC):
    """Owns a backend's shared state (a connection pool, or the process's own dict) and hands
    out per-session `ChatHistory` objects. Constructors do no I/O."""

    backend: str

    @abstractmethod
    def history(self, session_id: str) -> ChatHistory:
        """A handle on one session's history (cheap; does no I/O)."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise `HistoryUnavailable` otherwise."""

    async def aclose(self) -> None:  # noqa: B027 - a no-op is the right default
        """Release connections; the store is unusable afterwards."""
