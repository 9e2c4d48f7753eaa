"""The process's one Redis connection pool: how it is built, and how it is warmed."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from service.config import Settings

# Connections opened at once while warming. Every connect races its own connect timeout, but
# the event loop completes connects one after another: opening 50 together under CPU
# contention took up to 0.5 s each (and timed out), 4 at a time took at most 80 ms each
# (docs/configuration.md, REDIS_WARM_CONNECTIONS).
WARM_CONCURRENCY = 4


def build_async_client(settings: Settings) -> aredis.Redis:
    """One pooled async client per process, every timeout and retry taken from settings.

    Only connection errors are retried: a write that timed out may have been applied, and
    retrying it could store the turn twice; the caller gets a 503 and may resend the turn.
    """
    pool = aredis.BlockingConnectionPool.from_url(
        settings.redis_url,
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
    # redis-py's deprecation decorator leaves get_connection untyped.
    connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
    return connection
