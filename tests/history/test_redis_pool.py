"""Warming the Redis pool: a few connections at a time, idle ones count, nothing leaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aredis

from chat_history_k8s.history.redis_pool import (
    CONNECT_CONCURRENCY,
    TcpConnection,
    WarmedPool,
    build_async_client,
    warm_pool,
)
from tests.conftest import make_settings
from testsupport import LOOPBACK
from testsupport.gate import DroppingGate


class ConnectCounter:
    """Counts connects of async connections that were not connected yet, and their peak."""

    def __init__(self) -> None:
        self.opened = self.in_flight = self.peak = 0


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> ConnectCounter:
    counter = ConnectCounter()
    original: Callable[[aredis.Connection], Awaitable[None]] = aredis.Connection.connect

    async def counting(self: aredis.Connection) -> None:
        if self.is_connected:
            return await original(self)
        counter.in_flight += 1
        counter.peak = max(counter.peak, counter.in_flight)
        try:
            await original(self)
            counter.opened += 1
        finally:
            counter.in_flight -= 1

    monkeypatch.setattr(aredis.Connection, "connect", counting)
    return counter


@asynccontextmanager
async def pool_for(
    url: str, max_connections: int, **overrides: Any
) -> AsyncIterator[aredis.ConnectionPool]:
    settings = make_settings("redis", url, redis_max_connections=max_connections, **overrides)
    client = build_async_client(settings)
    assert isinstance(client, aredis.Redis)  # standalone mode: one pool
    try:
        yield client.connection_pool
    finally:
        await client.aclose()
        await client.connection_pool.disconnect()


async def test_warming_opens_connections_a_few_at_a_time_and_counts_idle_ones(
    redis_url: str, connects: ConnectCounter
) -> None:
    async with pool_for(redis_url, 16) as pool:
        await warm_pool(pool, 10, concurrency=3)
        assert (connects.opened, connects.peak) == (10, 3)
        await warm_pool(pool, 12, concurrency=3)  # 10 are open already
        assert connects.opened == 12


async def test_a_failed_warm_up_raises_and_leaves_nothing_checked_out(redis_url: str) -> None:
    async with pool_for(redis_url, 2) as pool:
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            await warm_pool(pool, 3)  # two open, the third finds the pool full
        await warm_pool(pool, 2)  # would find no free connection if one had leaked


async def test_a_burst_on_a_cold_pool_opens_a_few_connections_at_a_time(
    redis_url: str, connects: ConnectCounter
) -> None:
    # No warm-up: 50 commands at once must not start 50 connects racing one connect timeout
    # (under CPU contention they time out: a 503 burst at every start and Redis restart).
    async with pool_for(redis_url, 64) as pool:
        client = aredis.Redis(connection_pool=pool)
        await asyncio.gather(*(client.ping() for _ in range(50)))
        assert connects.peak == CONNECT_CONCURRENCY
        assert connects.opened == 50


async def test_a_slow_socket_close_at_shutdown_is_logged_not_raised(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py gives each socket REDIS_CONNECT_TIMEOUT_SECONDS to close; on a starved CPU that
    can pass (seen in CI: "Timed out closing connection after 0.5"). Shutdown logs it and goes
    on instead of ending the app's lifespan with an exception."""
    settings = make_settings("redis", redis_url)
    pooled = WarmedPool(build_async_client(settings), settings)
    await pooled.ping()
    original = aredis.Connection.disconnect

    async def slow_close(self: aredis.Connection, nowait: bool = False) -> None:
        await original(self, nowait)
        raise redis.TimeoutError("Timed out closing connection after 0.5")

    monkeypatch.setattr(aredis.Connection, "disconnect", slow_close)
    await pooled.aclose()  # does not raise
    assert "closing the Redis connections: Timed out closing connection" in caplog.text


async def test_checkouts_beyond_the_pool_wait_for_releases_and_nothing_leaks(
    redis_url: str, connects: ConnectCounter
) -> None:
    # 40 commands on 4 connections: most checkouts find an idle connection (the pool's short
    # path), the others wait in redis-py's path and must be woken by a release.
    async with pool_for(redis_url, 4) as pool:
        await warm_pool(pool, 4)
        client = aredis.Redis(connection_pool=pool)
        replies = await asyncio.gather(*(client.incr("n") for _ in range(40)))
        assert sorted(replies) == list(range(1, 41))
        assert connects.opened == 4
        assert (len(pool._in_use_connections), len(pool._available_connections)) == (
            0,
            4,
        )  # the pool's own lists


async def test_a_dead_idle_connection_is_reopened(redis_url: str) -> None:
    async with pool_for(redis_url, 1) as pool:
        client = aredis.Redis(connection_pool=pool)
        await client.ping()
        opened = (await client.info("stats"))["total_connections_received"]
        await client.client_kill_filter(_type="normal", skipme=False)  # the pooled one: dead now
        assert await client.ping()  # on the same connection object, reopened
        assert (await client.info("stats"))["total_connections_received"] == opened + 1
        assert (len(pool._in_use_connections), len(pool._available_connections)) == (
            0,
            1,
        )  # the pool's own lists


def gated(redis_url: str, gate: DroppingGate) -> str:
    return urlsplit(redis_url)._replace(netloc=f"{LOOPBACK}:{gate.port}").geturl()


@pytest.fixture
async def gate(redis_url: str) -> AsyncIterator[DroppingGate]:
    """A port in front of the test's Redis whose connects get no answer until it is opened."""
    port = urlsplit(redis_url).port
    assert port is not None
    dropping = DroppingGate(port)
    yield dropping
    await dropping.aclose()


class ConnectAttempts:
    """Socket connects of async connections, retries included, and what to do before one."""

    def __init__(self) -> None:
        self.count = 0
        self.before: dict[int, Callable[[], Awaitable[None]]] = {}  # attempt number -> action


@pytest.fixture
def connect_attempts(monkeypatch: pytest.MonkeyPatch) -> ConnectAttempts:
    attempts = ConnectAttempts()
    original = aredis.Connection._connect

    async def counting(self: aredis.Connection) -> None:
        attempts.count += 1
        if (action := attempts.before.get(attempts.count)) is not None:
            await action()
        await original(self)  # type: ignore[no-untyped-call]  # untyped in redis-py

    monkeypatch.setattr(aredis.Connection, "_connect", counting)
    return attempts


async def test_a_connect_that_got_no_answer_is_retried_and_the_command_reaches_redis(
    redis_url: str, gate: DroppingGate, connect_attempts: ConnectAttempts
) -> None:
    # redis-py raises a timed-out connect as TimeoutError and never retries it; nothing was
    # sent on it, so it is retried like a refused one (a dropped SYN after a pod replacement).
    connect_attempts.before[2] = gate.open  # the first SYN was dropped; the retry's gets through
    async with pool_for(gated(redis_url, gate), 1, redis_connect_timeout_seconds=0.2) as pool:
        assert pool.connection_class is TcpConnection
        assert await aredis.Redis(connection_pool=pool).ping()
        assert (connect_attempts.count, gate.relayed) == (2, 1)


async def test_connects_that_get_no_answer_fail_as_a_connection_error_after_the_retries(
    redis_url: str, gate: DroppingGate, connect_attempts: ConnectAttempts
) -> None:
    url = gated(redis_url, gate)
    async with pool_for(url, 1, redis_connect_timeout_seconds=0.2, redis_retries=2) as pool:
        with pytest.raises(redis.ConnectionError, match="Timeout connecting to"):
            await aredis.Redis(connection_pool=pool).ping()
        assert connect_attempts.count == 3  # the first and REDIS_RETRIES more
        assert gate.relayed == 0
