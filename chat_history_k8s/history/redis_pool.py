"""The process's one Redis connection pool: how it is built, paced and warmed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from chat_history_k8s.config import Settings
from chat_history_k8s.history.base import HistoryUnavailable

logger = logging.getLogger(__name__)

# Connections opened at once. Every connect races its own connect timeout, but the event loop
# completes connects one after another: opening 50 together under CPU contention took up to
# 0.5 s each (and timed out), 4 at a time took at most 80 ms each (docs/configuration.md,
# REDIS_WARM_CONNECTIONS). A burst meets a cold pool at startup and again after every Redis
# restart (every pooled connection is dead then), so the pool itself paces its connects.
CONNECT_CONCURRENCY = 4
WARM_CONCURRENCY = CONNECT_CONCURRENCY


class PacedConnectionPool(aredis.BlockingConnectionPool):
    """A `BlockingConnectionPool` that (re)connects at most `CONNECT_CONCURRENCY` connections
    at a time. A healthy pooled connection takes the usual path (one non-blocking check); only
    a connection that must be opened or reopened waits its turn, for at most `connect_wait`
    seconds, then fails with `redis.ConnectionError` like any failed connect (so a dead store
    still answers 503 fast instead of queueing every request behind timeouts)."""

    def __init__(self, *, connect_wait: float, **options: Any) -> None:
        super().__init__(**options)
        self._connect_wait = connect_wait
        self._connecting = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        maint = self.maint_notifications_enabled()  # type: ignore[no-untyped-call]  # untyped in redis-py
        if connection.is_connected and not maint:
            try:
                if not await connection.can_read():
                    return  # open, nothing unread: ready to send
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass  # dead socket (e.g. Redis restarted): reopen it below, paced
        try:
            async with asyncio.timeout(self._connect_wait):
                await self._connecting.acquire()
        except TimeoutError as exc:
            raise redis.ConnectionError("too many Redis connections being opened") from exc
        try:
            await super().ensure_connection(connection)
        finally:
            self._connecting.release()


def build_async_client(settings: Settings) -> aredis.Redis:
    """One pooled async client per process, every timeout and retry taken from settings.

    Only connection errors are retried: a write that timed out may have been applied, and
    retrying it could store the turn twice; the caller gets a 503 and may resend the turn.
    """
    pool = PacedConnectionPool.from_url(
        settings.redis_url,
        # Waiting for a turn to connect: the same budget as one command (connect + reply).
        connect_wait=settings.redis_connect_timeout_seconds + settings.redis_socket_timeout_seconds,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_connect_timeout_seconds,  # wait for a free pooled connection
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        retry=AsyncRetry(
            ExponentialBackoff(cap=1.0, base=settings.redis_retry_backoff_seconds),
            settings.redis_retries,
            supported_errors=(redis.ConnectionError,),
        ),
        retry_on_timeout=False,
        health_check_interval=0,  # no hidden PINGs: they would add round trips to a turn
    )
    return aredis.Redis(connection_pool=pool)


async def warm_pool(
    pool: aredis.ConnectionPool, connections: int, concurrency: int = WARM_CONCURRENCY
) -> None:
    """Make `pool` hold at least `connections` open connections (idle ones count), opening
    at most `concurrency` at a time, and leave them idle in the pool.

    Raises the first error (`redis.RedisError`) and stops there; whatever was opened stays in
    the pool. Cancelling it is safe: no connection is left checked out.
    """
    held: list[AbstractConnection] = []
    try:
        while len(held) < connections:
            batch = min(concurrency, connections - len(held))
            opened = await asyncio.gather(
                *(_checkout(pool) for _ in range(batch)), return_exceptions=True
            )
            held += [c for c in opened if isinstance(c, AbstractConnection)]
            for outcome in opened:
                if isinstance(outcome, BaseException):
                    raise outcome
    finally:
        for connection in held:
            await pool.release(connection)


async def _checkout(pool: aredis.ConnectionPool) -> AbstractConnection:
    # The ignore: redis-py's deprecation decorator leaves get_connection untyped.
    connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]  # see above
    return connection


class WarmedPool:
    """The lifecycle of the process's one client, whichever API uses it: warmed at start, pinged
    by readiness, closed at shutdown.

    A fresh replica's pool is warmed before the replica counts as ready: `start()` opens
    `REDIS_WARM_CONNECTIONS` connections a few at a time, so a burst of turns on a replica that
    has just started (scale-up, rolling restart) does not open them all at once, each against
    the connect timeout. Until a warm-up has succeeded, `ping()` (readiness) tries it again
    first.
    """

    def __init__(self, client: aredis.Redis, settings: Settings) -> None:
        self.client = client
        self._warm_connections = min(
            settings.redis_warm_connections, settings.redis_max_connections
        )
        self._warmed = self._warm_connections == 0
        self._warming: asyncio.Task[None] | None = None
        # What readiness allows a healthy Redis to take: connect, then answer.
        self._answer_budget = (
            settings.redis_connect_timeout_seconds + settings.redis_socket_timeout_seconds
        )

    async def start(self) -> None:
        """Warm the pool, waiting for it at most the readiness budget (connect + socket
        timeout): a reachable Redis is warm before the first request, an unreachable one
        delays startup by that much at most and never fails it."""
        if not self._warmed:
            await asyncio.wait([self._warm_in_background()], timeout=self._answer_budget)

    def _warm_in_background(self) -> asyncio.Task[None]:
        if self._warming is None or self._warming.done():
            self._warming = asyncio.create_task(self._warm(), name="redis-pool-warm-up")
        return self._warming

    async def _warm(self) -> None:
        try:
            await warm_pool(self.client.connection_pool, self._warm_connections)
        except Exception as exc:  # a warm-up is an optimisation: it must never break startup
            logger.info("Redis pool not warmed (readiness will retry): %s", exc)
        else:
            self._warmed = True

    async def ping(self) -> None:
        """Return when Redis answers and the pool is warm; raise `HistoryUnavailable` otherwise."""
        if not self._warmed:
            # asyncio.wait: a probe that gives up does not cancel the warm-up it waited for.
            await asyncio.wait([self._warm_in_background()])
        try:
            await self.client.ping()
        except redis.RedisError as exc:
            raise HistoryUnavailable.from_redis(exc) from exc

    async def aclose(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.wait([self._warming])
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
