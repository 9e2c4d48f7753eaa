"""The limits' contract: admit a turn (or refuse it with `RateLimited`), give back what a failed
turn took, forget a deleted session."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


class RateLimited(Exception):
    """A principal is over a limit; nothing was stored. The API answers 429 `rate_limited`
    with `Retry-After: retry_after_s`."""

    def __init__(self, message: str, retry_after_ms: float) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_ms / 1000))


@dataclass(frozen=True)
class Admission:
    """An admitted turn: `new_session` when it took one of the principal's session slots (a
    failed turn gives it back)."""

    new_session: bool


class Limiter(ABC):
    """Per principal: at most `rate_limit_turns` turns admitted per `rate_limit_window_seconds`
    (a fixed window that starts at the principal's first turn in it), and at most
    `max_sessions_per_principal` live sessions (a session lives until it is deleted or its
    history TTL passes without a turn). 0 turns a limit off.

    `admit` checks both and, only when both allow the turn, counts it and records the session,
    atomically: a refused turn changes nothing. A turn is counted when admitted, whether or not
    it then succeeds (a failing model call costs as much as a working one).
    """

    @abstractmethod
    async def admit(self, principal: str, session_id: str) -> Admission:
        """Admit one turn or raise `RateLimited` (or `HistoryUnavailable`)."""

    @abstractmethod
    async def release(self, principal: str, session_id: str, admission: Admission) -> None:
        """The admitted turn failed and stored nothing: give back the session slot it took, if
        it took one. Never raises (a slot not given back expires with the session's TTL)."""

    @abstractmethod
    async def forget(self, principal: str, session_id: str) -> None:
        """The session was deleted: it no longer counts. Raises `HistoryUnavailable`."""

    def admit_command(self, principal: str, session_id: str) -> tuple[Any, ...] | None:
        """A Redis command that does `admit`, for a store to send along its own first round
        trip of the turn (then `admitted(reply)` reads its reply); None if there is none."""
        return None

    def admitted(self, reply: Any) -> Admission:
        """The reply of `admit_command`'s command as an `Admission`, or `RateLimited`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Gate:
    """One turn's way through the limits: the principal, the session, the limiter."""

    limiter: Limiter
    principal: str
    session_id: str

    def command(self) -> tuple[Any, ...] | None:
        return self.limiter.admit_command(self.principal, self.session_id)

    def admitted(self, reply: Any) -> Admission:
        return self.limiter.admitted(reply)

    async def admit(self) -> Admission:
        return await self.limiter.admit(self.principal, self.session_id)

    async def release(self, admission: Admission) -> None:
        await self.limiter.release(self.principal, self.session_id, admission)


def quota_message(quota: int) -> str:
    return (
        f"session quota reached: {quota} live sessions; delete one (DELETE "
        "/v1/sessions/{session_id}) or wait for one to expire"
    )


def rate_message(turns: int, window_s: int) -> str:
    return f"rate limit reached: {turns} turns per {window_s} s"
