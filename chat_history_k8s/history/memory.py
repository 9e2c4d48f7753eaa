"""Per-process history: fast, bounded, and lost on a hop to another replica or a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage

from chat_history_k8s.history.base import ChatHistory, HistoryStore, StoreMetric, whole_tool_groups

logger = logging.getLogger(__name__)

# How often a started store drops expired sessions nobody touches (or every TTL, if shorter).
# A sweep walks every session under the lock: about a millisecond per 10k sessions, so once a
# minute costs nothing, and expired history never lingers for long.
SWEEP_INTERVAL_SECONDS = 60.0


@dataclass
class _Session:
    messages: deque[BaseMessage]
    expires_at: float | None = field(default=None)


class MemoryStore(HistoryStore):
    """All sessions of this process in one LRU-ordered dict.

    Bounds, so a long-running replica cannot bloat: at most `max_sessions` sessions and at most
    `max_total_messages` messages in all (least recently used sessions are evicted), at most
    `max_messages` per session (oldest dropped), and a sliding TTL refreshed on every append
    (0 disables it). A lock makes every operation atomic, because
    the sync `BaseChatMessageHistory` methods may be called from worker threads.

    Expired sessions are dropped when next touched, by `sweep()`, and, once `start()`ed, by a
    background sweep every `sweep_interval_seconds` (default: 60 s, or the TTL if shorter).
    Until then they are still held, and still counted by `size_metrics()`.
    """

    backend = "memory"

    def __init__(
        self,
        *,
        max_sessions: int,
        max_messages: int,
        ttl_seconds: int,
        max_total_messages: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sweep_interval_seconds: float | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_total_messages = max_total_messages
        self.max_messages = max_messages
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self._message_count = 0
        self.evictions = {"lru": 0, "ttl": 0}
        if sweep_interval_seconds is None and ttl_seconds:
            sweep_interval_seconds = min(SWEEP_INTERVAL_SECONDS, ttl_seconds)
        self.sweep_interval_seconds = sweep_interval_seconds or SWEEP_INTERVAL_SECONDS
        self._sweeper: asyncio.Task[None] | None = None

    # -- sizes -------------------------------------------------------------------------------
    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def message_count(self) -> int:
        return self._message_count

    def size_metrics(self) -> list[StoreMetric]:
        """Sessions, messages and evictions as they stand: a read under the lock, nothing
        swept or reordered, so expired sessions not yet swept are still counted."""
        with self._lock:
            sessions, messages = len(self._sessions), self._message_count
            evictions: dict[tuple[str, ...], float] = {
                (reason,): n for reason, n in sorted(self.evictions.items())
            }
        return [
            StoreMetric(
                "chat_history_memory_sessions",
                "Sessions held in this process (memory backend), expired ones not yet swept "
                "included.",
                "gauge",
                {(): sessions},
            ),
            StoreMetric(
                "chat_history_memory_messages",
                "Messages held in this process (memory backend), expired ones not yet swept "
                "included.",
                "gauge",
                {(): messages},
            ),
            StoreMetric(
                "chat_history_memory_evictions",
                "Sessions evicted, by reason (lru, ttl).",
                "counter",
                evictions,
                labels=("reason",),
            ),
            StoreMetric(
                "chat_history_memory_max_sessions",
                "The session cap (MEMORY_MAX_SESSIONS).",
                "gauge",
                {(): self.max_sessions},
            ),
        ]

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Sweep expired sessions in the background until `aclose()`."""
        if self.ttl_seconds and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_periodically(), name="memory-sweep")

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_seconds)
            dropped = self.sweep()
            if dropped:
                logger.debug("swept %d expired sessions", dropped)

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # -- operations --------------------------------------------------------------------------
    def _live(self, session_id: str, now: float) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at is not None and session.expires_at <= now:
            self._drop(session_id, "ttl")
            return None
        self._sessions.move_to_end(session_id)
        return session

    def _drop(self, session_id: str, reason: str | None) -> None:
        session = self._sessions.pop(session_id)
        self._message_count -= len(session.messages)
        if reason is not None:
            self.evictions[reason] += 1

    def read(self, session_id: str, last: int | None = None) -> list[BaseMessage]:
        with self._lock:
            session = self._live(session_id, self._clock())
            if session is None:
                return []
            if last is None or last >= len(session.messages):
                return whole_tool_groups(list(session.messages))
            # Indexing a deque near its ends is O(1): the window costs O(last), not O(history).
            return whole_tool_groups([session.messages[i] for i in range(-last, 0)])

    def append(self, session_id: str, messages: Sequence[BaseMessage]) -> int:
        with self._lock:
            now = self._clock()
            session = self._live(session_id, now)
            if session is None:
                session = _Session(deque(maxlen=self.max_messages))
                self._sessions[session_id] = session
                while len(self._sessions) > self.max_sessions:
                    self._drop(next(iter(self._sessions)), "lru")
            before = len(session.messages)
            session.messages.extend(messages)
            self._message_count += len(session.messages) - before
            session.expires_at = now + self.ttl_seconds if self.ttl_seconds else None
            if self.max_total_messages is not None:
                # The session just written is the most recently used: it goes last, if ever.
                while self._message_count > self.max_total_messages and len(self._sessions) > 1:
                    self._drop(next(iter(self._sessions)), "lru")
            return before

    def clear(self, session_id: str) -> None:
        with self._lock:
            if session_id in self._sessions:
                self._drop(session_id, None)

    def sweep(self) -> int:
        """Drop every expired session now (reads and appends also expire lazily)."""
        with self._lock:
            now = self._clock()
            expired = [
                sid
                for sid, s in self._sessions.items()
                if s.expires_at is not None and s.expires_at <= now
            ]
            for sid in expired:
                self._drop(sid, "ttl")
            return len(expired)

    def history(self, session_id: str) -> MemoryChatHistory:
        return MemoryChatHistory(self, session_id)

    async def ping(self) -> None:
        return None


class MemoryChatHistory(ChatHistory):
    """A session in a `MemoryStore`; every method is native (no executor hop)."""

    def __init__(self, store: MemoryStore, session_id: str) -> None:
        super().__init__()
        self.store = store
        self.session_id = session_id

    def get_window(self, n: int) -> list[BaseMessage]:
        return self.store.read(self.session_id, last=n or None)

    async def aget_window(self, n: int) -> list[BaseMessage]:
        return self.store.read(self.session_id, last=n or None)

    def append_turn(self, messages: Sequence[BaseMessage]) -> int:
        return self.store.append(self.session_id, messages)

    async def aappend_turn(self, messages: Sequence[BaseMessage]) -> int:
        return self.store.append(self.session_id, messages)

    def clear(self) -> None:
        self.store.clear(self.session_id)

    async def aclear(self) -> None:
        self.store.clear(self.session_id)
