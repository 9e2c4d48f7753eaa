"""Limits in Redis, shared by every replica; the admission is one script, sent along the turn's
first round trip (message-history) or on its own (checkpointer)."""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aredis

from chat_history_k8s.config import Settings
from chat_history_k8s.history.base import HistoryUnavailable
from chat_history_k8s.history.redis import RoundTripHook
from chat_history_k8s.history.redis_pool import REDIS_ERRORS
from chat_history_k8s.limits.base import (
    Admission,
    Limiter,
    RateLimited,
    quota_message,
    rate_message,
)

logger = logging.getLogger(__name__)

# KEYS: the principal's turn counter (a STRING that expires with its window) and its sessions
# (a ZSET: session id -> expiry in ms, +inf without a TTL). ARGV: turns per window (0 = off),
# window ms, session quota (0 = off), session id, history TTL ms (0 = none).
# Replies {1, new_session} when admitted, {0, retry_after_ms, reason} when refused; a refusal
# writes nothing. Redis's clock (TIME) is the one clock every replica shares.
ADMIT = """
local turns, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local quota, session, ttl = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
if turns > 0 then
  local n = tonumber(redis.call('GET', KEYS[1]) or '0')
  if n >= turns then return {0, redis.call('PTTL', KEYS[1]), 'rate'} end
end
local new = 0
if quota > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if not redis.call('ZSCORE', KEYS[2], session) then
    if redis.call('ZCARD', KEYS[2]) >= quota then
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local wait = 3600000
      if first[2] ~= 'inf' then wait = tonumber(first[2]) - now end
      return {0, wait, 'quota'}
    end
    new = 1
  end
  if ttl > 0 then
    redis.call('ZADD', KEYS[2], now + ttl, session)
    redis.call('PEXPIRE', KEYS[2], ttl)
  else
    redis.call('ZADD', KEYS[2], '+inf', session)
  end
end
if turns > 0 and redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
end
return {1, new}
"""


class RedisLimiter(Limiter):
    """`Limiter` in Redis under `<REDIS_KEY_PREFIX>limits:{<principal>}:turns` and `:sessions`
    (one hash tag per principal: the script's two keys share a slot). Per principal that is
    one counter and a set of at most `max_sessions_per_principal` session ids.

    The script is sent with EVAL (not EVALSHA): its text is small and a pipelined EVALSHA would
    need a SCRIPT LOAD round trip whenever Redis restarted.
    """

    def __init__(
        self,
        client: aredis.Redis | aredis.RedisCluster,
        settings: Settings,
        on_round_trip: RoundTripHook | None = None,
    ) -> None:
        self.client = client
        self.prefix = f"{settings.redis_key_prefix}limits:"
        self.turns = settings.rate_limit_turns
        self.window_s = settings.rate_limit_window_seconds
        self.quota = settings.max_sessions_per_principal
        self.ttl_ms = settings.history_ttl_seconds * 1000
        self._on_round_trip = on_round_trip

    def keys(self, principal: str) -> tuple[str, str]:
        return f"{self.prefix}{{{principal}}}:turns", f"{self.prefix}{{{principal}}}:sessions"

    def _keys_and_args(self, principal: str, session_id: str) -> tuple[str | int, ...]:
        turns_key, sessions_key = self.keys(principal)
        return (
            turns_key, sessions_key,
            self.turns, self.window_s * 1000, self.quota, session_id, self.ttl_ms,
        )  # fmt: skip

    def admit_command(self, principal: str, session_id: str) -> tuple[Any, ...]:
        return ("EVAL", ADMIT, 2, *self._keys_and_args(principal, session_id))

    def admitted(self, reply: Any) -> Admission:
        if int(reply[0]) == 1:
            return Admission(new_session=bool(int(reply[1])))
        reason = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        if reason == "rate":
            raise RateLimited(rate_message(self.turns, self.window_s), float(reply[1]))
        raise RateLimited(quota_message(self.quota), float(reply[1]))

    def _counted(self, op: str) -> None:
        if self._on_round_trip is not None:
            self._on_round_trip(op)

    async def admit(self, principal: str, session_id: str) -> Admission:
        try:
            reply = await self.client.eval(ADMIT, 2, *self._keys_and_args(principal, session_id))
        except REDIS_ERRORS as exc:
            raise HistoryUnavailable.from_redis(exc) from exc
        finally:
            self._counted("admit")
        return self.admitted(reply)

    async def release(self, principal: str, session_id: str, admission: Admission) -> None:
        if not admission.new_session:
            return
        try:
            await self.client.zrem(self.keys(principal)[1], session_id)
        except REDIS_ERRORS:
            logger.warning("a failed turn's session slot was not given back (it expires)")
        finally:
            self._counted("release_slot")

    async def forget(self, principal: str, session_id: str) -> None:
        if not self.quota:
            return
        try:
            await self.client.zrem(self.keys(principal)[1], session_id)
        except REDIS_ERRORS as exc:
            raise HistoryUnavailable.from_redis(exc) from exc
        finally:
            self._counted("forget")
