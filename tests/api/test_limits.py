"""Per-principal abuse limits (turns per window, live sessions), on both backends and both
memory APIs: 429 `rate_limited` with `Retry-After`, a refused turn stores nothing, one
principal's limits never touch another's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import httpx
import pytest
import redis

from tests.api.models import FAIL, FlakyModel
from tests.conftest import (
    app_client,
    auth_settings,
    bearer,
    commands_per_turn,
    commandstats,
    make_settings,
    stored_sessions,
    wait_ready,
)
from testsupport import RedisServer

Factory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def limited_app(
    backend: str, history_api: str, api_keys: dict[str, str], request: pytest.FixtureRequest
) -> Factory:
    """Starts an app with auth on and the given limits (`pod_name` distinguishes replicas)."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else None

    def start(pod: str = "pod-0", **limits: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        settings = make_settings(
            backend, url, history_api=history_api, pod_name=pod, **auth_settings(api_keys, **limits)
        )
        return app_client(settings, model=FlakyModel())

    return start


async def turn(
    client: httpx.AsyncClient, key: str, session_id: str, msg: str = "hi"
) -> httpx.Response:
    return await client.post(
        "/v1/chat", json={"session_id": session_id, "message": msg}, headers=bearer(key)
    )


def refused(r: httpx.Response, what: str) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert what in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1


async def test_turns_over_the_rate_are_429_with_retry_after_and_store_nothing(
    limited_app: Factory, api_keys: dict[str, str]
) -> None:
    alice, bob = api_keys["alice"], api_keys["bob"]
    async with limited_app(rate_limit_turns=3, rate_limit_window_seconds=60) as client:
        for i in range(3):
            assert (await turn(client, alice, "s1", f"m{i}")).status_code == 200
        r = await turn(client, alice, "s1", "one too many")
        refused(r, "3 turns per 60 s")
        assert 55 <= int(r.headers["retry-after"]) <= 60
        refused(await turn(client, alice, "s2"), "rate limit")
        transcript = await client.get("/v1/sessions/s1/messages", headers=bearer(alice))
        assert len(transcript.json()["messages"]) == 6  # the refused turn is not there
        assert (
            await client.get("/v1/sessions/s2/messages", headers=bearer(alice))
        ).status_code == 404
        # Bob's budget is his own.
        assert (await turn(client, bob, "s1")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'chat_errors_total{code="rate_limited"} 2.0' in metrics


async def test_the_window_ends_and_turns_are_admitted_again(
    limited_app: Factory, api_keys: dict[str, str]
) -> None:
    async with limited_app(rate_limit_turns=1, rate_limit_window_seconds=1) as client:
        assert (await turn(client, api_keys["alice"], "s")).status_code == 200
        refused(await turn(client, api_keys["alice"], "s"), "rate limit")
        await asyncio.sleep(1.1)
        assert (await turn(client, api_keys["alice"], "s")).status_code == 200


async def test_new_sessions_over_the_quota_are_429_existing_ones_still_chat(
    limited_app: Factory, api_keys: dict[str, str]
) -> None:
    alice, bob = api_keys["alice"], api_keys["bob"]
    async with limited_app(max_sessions_per_principal=2) as client:
        for sid in ("a", "b"):
            assert (await turn(client, alice, sid)).status_code == 200
        refused(await turn(client, alice, "c"), "session quota reached: 2")
        r = await client.post("/v1/chat", json={"message": "new"}, headers=bearer(alice))
        refused(r, "session quota")
        assert (
            await client.get("/v1/sessions/c/messages", headers=bearer(alice))
        ).status_code == 404
        assert (await turn(client, alice, "a", "still here")).status_code == 200
        assert (await turn(client, bob, "c")).status_code == 200  # Bob's quota is his own
        # Deleting a session gives its slot back.
        assert (await client.delete("/v1/sessions/b", headers=bearer(alice))).status_code == 204
        assert (await turn(client, alice, "c")).status_code == 200


async def test_a_failed_turn_gives_its_session_slot_back(
    limited_app: Factory, api_keys: dict[str, str]
) -> None:
    alice = api_keys["alice"]
    async with limited_app(max_sessions_per_principal=1) as client:
        r = await turn(client, alice, "a", f"{FAIL} boom")
        assert r.status_code == 502
        assert (await turn(client, alice, "b")).status_code == 200  # "a" took no slot


async def test_limits_hold_across_replicas_with_redis(
    redis_url: str, history_api: str, api_keys: dict[str, str]
) -> None:
    alice = api_keys["alice"]
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                app_client(
                    make_settings(
                        "redis", redis_url, history_api=history_api, pod_name=f"pod-{i}",
                        **auth_settings(api_keys, rate_limit_turns=4, max_sessions_per_principal=2),
                    )
                )
            )
            for i in range(2)
        ]  # fmt: skip
        statuses = [(await turn(clients[i % 2], alice, f"s{i % 2}")).status_code for i in range(4)]
        assert statuses == [200] * 4
        refused(await turn(clients[0], alice, "s0"), "rate limit")
        refused(await turn(clients[1], alice, "s1"), "rate limit")
    assert stored_sessions(redis.Redis.from_url(redis_url), history_api) == 2


async def test_a_limited_message_history_turn_is_still_two_round_trips(
    redis_url: str, api_keys: dict[str, str], count_round_trips: list[int]
) -> None:
    """The admission script rides in the window read's pipeline: 2 round trips per turn."""
    settings = make_settings(
        "redis", redis_url,
        **auth_settings(api_keys, rate_limit_turns=1000, max_sessions_per_principal=10),
    )  # fmt: skip
    server = redis.Redis.from_url(redis_url)
    async with app_client(settings) as client:
        assert (await turn(client, api_keys["alice"], "warm")).status_code == 200
        count_round_trips[0] = 0
        before = commandstats(server)
        for i in range(5):
            assert (await turn(client, api_keys["alice"], f"s{i % 2}")).status_code == 200
        after = commandstats(server)
    assert count_round_trips[0] == 10
    per_turn = commands_per_turn(before, after, 5)
    # The admission (EVAL, in the read's pipeline) and the append (EVALSHA of its script).
    assert per_turn["eval"] == 1 and per_turn["lrange"] == 1 and per_turn["evalsha"] == 1
    assert not {"script", "scan", "keys", "exec"} & set(per_turn)


async def test_limits_off_by_default(redis_url: str) -> None:
    settings = make_settings("redis", redis_url)
    async with app_client(settings) as client:
        for _ in range(30):
            assert (await turn(client, "any", "s")).status_code == 200
    assert redis.Redis.from_url(redis_url).keys("*limits*") == []


async def test_a_refused_turn_leaves_every_redis_key_as_it_was(
    redis_url: str, history_api: str, api_keys: dict[str, str]
) -> None:
    """Refused by the quota or by the rate: no key added, none changed (a flood of refused new
    sessions cannot grow the store)."""
    settings = make_settings(
        "redis", redis_url, history_api=history_api,
        **auth_settings(api_keys, rate_limit_turns=3, max_sessions_per_principal=1),
    )  # fmt: skip
    server = redis.Redis.from_url(redis_url)

    def snapshot() -> dict[bytes, bytes | None]:
        return {key: server.dump(key) for key in server.scan_iter("*")}

    async with app_client(settings) as client:
        assert (await turn(client, api_keys["alice"], "kept")).status_code == 200
        before = snapshot()
        for i in range(20):
            refused(await turn(client, api_keys["alice"], f"new-{i}"), "session quota")
        assert snapshot() == before
        for _ in range(2):
            assert (await turn(client, api_keys["alice"], "kept")).status_code == 200
        before = snapshot()
        refused(await turn(client, api_keys["alice"], "kept"), "rate limit")
        refused(await turn(client, api_keys["alice"], "new-x"), "rate limit")
        assert snapshot() == before


async def test_a_limited_checkpointer_turn_adds_one_round_trip_for_the_admission(
    redis_url: str, api_keys: dict[str, str], count_round_trips: list[int]
) -> None:
    settings = make_settings(
        "redis", redis_url, history_api="checkpointer",
        **auth_settings(api_keys, rate_limit_turns=1000, max_sessions_per_principal=10),
    )  # fmt: skip
    async with app_client(settings) as client:
        assert (await turn(client, api_keys["alice"], "warm")).status_code == 200
        count_round_trips[0] = 0
        for i in range(5):
            assert (await turn(client, api_keys["alice"], f"s{i % 2}")).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert count_round_trips[0] == 25  # admit, acquire, get, put, release
    assert 'chat_history_redis_round_trips_total{op="admit"} 6.0' in metrics


async def test_with_redis_down_a_limited_turn_is_503_not_429_and_not_500(
    own_redis: RedisServer, history_api: str, api_keys: dict[str, str]
) -> None:
    settings = make_settings(
        "redis", own_redis.url, history_api=history_api,
        **auth_settings(api_keys, rate_limit_turns=10, max_sessions_per_principal=10),
    )  # fmt: skip
    async with app_client(settings) as client:
        assert (await turn(client, api_keys["alice"], "s")).status_code == 200
        own_redis.stop()
        r = await turn(client, api_keys["alice"], "s")
        assert r.status_code == 503 and r.json()["error"]["code"] == "history_unavailable"
        r = await client.delete("/v1/sessions/s", headers=bearer(api_keys["alice"]))
        assert r.status_code == 503
        own_redis.start()
        await wait_ready(client)
        r = await client.get("/v1/sessions/s/messages", headers=bearer(api_keys["alice"]))
        assert len(r.json()["messages"]) == 2  # the failed turn stored nothing
