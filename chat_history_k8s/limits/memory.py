"""Limits kept in this process: each replica counts on its own (HISTORY_BACKEND=memory)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from chat_history_k8s.config import Settings
from chat_history_k8s.limits.base import (
    Admission,
    Limiter,
    RateLimited,
    quota_message,
    rate_message,
)


@dataclass
class _Window:
    ends_at: float
    turns: int


class MemoryLimiter(Limiter):
    """`Limiter` in one process's memory, with the same rules as `RedisLimiter`. Bounded: one
    window and at most `max_sessions_per_principal` sessions per principal, and principals
    hold keys. Sessions the memory store evicted still count until deleted or expired."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.turns = settings.rate_limit_turns
        self.window_s = settings.rate_limit_window_seconds
        self.quota = settings.max_sessions_per_principal
        self.ttl_s = settings.history_ttl_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._sessions: dict[str, dict[str, float]] = {}

    async def admit(self, principal: str, session_id: str) -> Admission:
        now = self._clock()
        window = self._windows.get(principal)
        if window is not None and window.ends_at <= now:
            window = None
        if self.turns and window is not None and window.turns >= self.turns:
            raise RateLimited(
                rate_message(self.turns, self.window_s), (window.ends_at - now) * 1000
            )
        sessions = self._sessions.setdefault(principal, {})
        new = False
        if self.quota:
            for sid in [s for s, expires in sessions.items() if expires <= now]:
                del sessions[sid]
            new = session_id not in sessions
            if new and len(sessions) >= self.quota:
                soonest = min(sessions.values())
                wait_ms = (soonest - now) * 1000 if soonest != float("inf") else 3_600_000
                raise RateLimited(quota_message(self.quota), wait_ms)
            sessions[session_id] = now + self.ttl_s if self.ttl_s else float("inf")
        if self.turns:
            if window is None:
                window = self._windows[principal] = _Window(now + self.window_s, 0)
            window.turns += 1
        return Admission(new_session=new)

    async def release(self, principal: str, session_id: str, admission: Admission) -> None:
        if admission.new_session:
            self._sessions.get(principal, {}).pop(session_id, None)

    async def forget(self, principal: str, session_id: str) -> None:
        self._sessions.get(principal, {}).pop(session_id, None)
