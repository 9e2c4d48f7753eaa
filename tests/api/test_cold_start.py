"""A replica that has just started (scale-up, rolling restart) takes a burst without a 503, in
both APIs (they share the pool and its warm-up)."""

from __future__ import annotations

import asyncio
import time

import httpx
import redis

from tests.conftest import app_client, make_settings, stored_sessions, wait_ready
from testsupport import RedisServer

BURST = 50
STARTS = 20
RESTARTS = 10


async def burst(client: httpx.AsyncClient, prefix: str) -> list[tuple[str, int, str]]:
    """BURST concurrent turns, each on a session of its own; the ones not answered 200."""
    results = await asyncio.gather(
        *(
            client.post("/v1/chat", json={"session_id": f"{prefix}-{i}", "message": "hi"})
            for i in range(BURST)
        )
    )
    return [(prefix, r.status_code, r.text) for r in results if r.status_code != 200]


async def test_a_freshly_started_replica_answers_a_burst_of_fifty_turns(
    redis_url: str, history_api: str
) -> None:
    failures = []
    for start in range(STARTS):
        # A new app each time: a new lifespan, a new (cold) connection pool.
        settings = make_settings("redis", redis_url, history_api=history_api)
        async with app_client(settings) as client:
            await wait_ready(client)
            failures += await burst(client, f"start{start}")
    assert failures == []
    with redis.Redis.from_url(redis_url) as server:
        assert stored_sessions(server, history_api) == STARTS * BURST  # every turn stored


def chat_clients(url: str) -> int:
    """Connections to the server at `url` other than the one asking."""
    server = redis.Redis.from_url(url)
    me = server.client_id()
    return sum(1 for c in server.client_list() if int(c["id"]) != me)


# The turn's own multiplexed connection (chat_history_k8s/history/redis_mux.py), opened with the
# warm-up: the message-history API reads and appends through it, the checkpointer does not.
MULTIPLEXED = {"message-history": 1, "checkpointer": 0}


def connections_opened(url: str) -> int:
    return int(redis.Redis.from_url(url).info("stats")["total_connections_received"])


async def test_a_started_replica_holds_its_warm_connections_and_a_burst_opens_none(
    redis_url: str, history_api: str
) -> None:
    async with app_client(make_settings("redis", redis_url, history_api=history_api)) as client:
        # REDIS_WARM_CONNECTIONS (the whole pool), and the turns' own connection.
        assert chat_clients(redis_url) == 64 + MULTIPLEXED[history_api]
        await wait_ready(client)
        before = connections_opened(redis_url)
        results = await asyncio.gather(
            *(client.post("/v1/chat", json={"message": f"m{i}"}) for i in range(BURST))
        )
        assert [r.status_code for r in results] == [200] * BURST
        assert connections_opened(redis_url) - before == 1  # the second check's own


async def test_warming_is_bounded_by_the_pool_and_can_be_turned_off(redis_url: str) -> None:
    small = make_settings("redis", redis_url, redis_max_connections=8)
    async with app_client(small):
        assert chat_clients(redis_url) == 8 + MULTIPLEXED["message-history"]
    async with app_client(make_settings("redis", redis_url, redis_warm_connections=0)):
        assert chat_clients(redis_url) == 0  # no warm-up at all: nothing opened before a turn


async def test_a_replica_starts_while_redis_is_down_and_warms_once_it_is_back(
    own_redis: RedisServer, history_api: str
) -> None:
    own_redis.stop()
    started = time.monotonic()
    async with app_client(make_settings("redis", own_redis.url, history_api=history_api)) as client:
        assert time.monotonic() - started < 2  # the failed warm-up delays startup, briefly
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "history_unavailable"
        own_redis.start()  # same port
        await wait_ready(client)
        # Readiness warmed the pool first, and opened the turns' own connection.
        assert chat_clients(own_redis.url) == 64 + MULTIPLEXED[history_api]


async def test_after_a_redis_restart_the_first_burst_reconnects_without_a_503(
    own_redis: RedisServer, history_api: str
) -> None:
    # Every pooled connection dies with Redis: the next burst meets a pool that must reopen
    # them all, the cold-start burst again. The pool paces those connects too.
    async with app_client(make_settings("redis", own_redis.url, history_api=history_api)) as client:
        await wait_ready(client)
        failures = []
        for restart in range(RESTARTS):
            own_redis.kill()
            own_redis.start()  # same port, same AOF
            await wait_ready(client)
            failures += await burst(client, f"restart{restart}")
        assert failures == []
        with own_redis.client() as server:
            # every turn stored, none twice
            assert stored_sessions(server, history_api) == RESTARTS * BURST
