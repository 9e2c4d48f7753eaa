"""Authentication and tenant isolation, on both backends and both memory APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from chat_history_k8s.config import Settings
from tests.conftest import (
    app_client,
    auth_settings,
    bearer,
    commands_per_turn,
    commandstats,
    make_settings,
)


@pytest.fixture
async def authed(
    backend: str, history_api: str, api_keys: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    settings = make_settings(backend, url, history_api=history_api, **auth_settings(api_keys))
    async with app_client(settings) as client:
        yield client


async def chat(
    client: httpx.AsyncClient, key: str, session_id: str, message: str
) -> dict[str, Any]:
    r = await client.post(
        "/v1/chat", json={"session_id": session_id, "message": message}, headers=bearer(key)
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YTpi"}, {"Authorization": ""}],
)
async def test_without_a_valid_key_every_session_route_is_401_and_stores_nothing(
    authed: httpx.AsyncClient, api_keys: dict[str, str], headers: dict[str, str]
) -> None:
    calls = [
        ("POST", "/v1/chat", {"session_id": "s1", "message": "hi"}),
        ("POST", "/v1/chat", {"message": "hi"}),
        ("GET", "/v1/sessions/s1/messages", None),
        ("DELETE", "/v1/sessions/s1", None),
    ]
    for method, path, body in calls:
        r = await authed.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["x-served-by"]
    r = await authed.get("/v1/sessions/s1/messages", headers=bearer(api_keys["alice"]))
    assert r.status_code == 404  # the refused turn stored nothing
    metrics = (await authed.get("/metrics")).text
    assert 'chat_errors_total{code="unauthorized"} 4.0' in metrics
    assert "chat_auth_principals 2.0" in metrics
    assert 'chat_auth_key_reloads_total{result="error"} 0.0' in metrics


async def test_probes_metrics_info_and_the_page_stay_open(authed: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v1/info", "/", "/docs", "/openapi.json"):
        r = await authed.get(path)
        assert r.status_code == 200, (path, r.text)


async def test_another_principal_never_sees_reaches_or_deletes_a_session(
    authed: httpx.AsyncClient, api_keys: dict[str, str]
) -> None:
    alice, bob = api_keys["alice"], api_keys["bob"]
    await chat(authed, alice, "shared-id", "my name is Ada")
    # Bob's requests on the same id: not found, and a chat there is a session of his own.
    r = await authed.get("/v1/sessions/shared-id/messages", headers=bearer(bob))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "session_not_found"
    assert "Ada" not in r.text
    mine = await chat(authed, bob, "shared-id", "what is my name?")
    assert mine["history_length"] == 0 and "Ada" not in mine["reply"]
    r = await authed.delete("/v1/sessions/shared-id", headers=bearer(bob))
    assert r.status_code == 204
    # Alice's session is untouched by all of it.
    r = await authed.get("/v1/sessions/shared-id/messages", headers=bearer(alice))
    transcript = r.json()["messages"]
    assert len(transcript) == 2 and transcript[0]["content"] == "my name is Ada"
    again = await chat(authed, alice, "shared-id", "what is my name?")
    assert again["history_length"] == 2 and again["reply"].startswith("Your name is Ada.")
    r = await authed.get("/v1/sessions/shared-id/messages", headers=bearer(bob))
    assert r.status_code == 404  # Bob deleted his own session only


async def test_a_key_of_either_case_of_scheme_is_accepted(
    authed: httpx.AsyncClient, api_keys: dict[str, str]
) -> None:
    r = await authed.post(
        "/v1/chat",
        json={"session_id": "s", "message": "hi"},
        headers={"Authorization": f"bearer {api_keys['alice']}"},
    )
    assert r.status_code == 200


async def test_the_key_may_come_as_x_api_key_where_a_proxy_strips_authorization(
    authed: httpx.AsyncClient, api_keys: dict[str, str]
) -> None:
    body = {"session_id": "s", "message": "hi"}
    r = await authed.post("/v1/chat", json=body, headers={"X-API-Key": api_keys["bob"]})
    assert r.status_code == 200
    r = await authed.get("/v1/sessions/s/messages", headers=bearer(api_keys["bob"]))
    assert r.status_code == 200  # the same principal, whichever header carried the key
    r = await authed.post("/v1/chat", json=body, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401


async def test_without_auth_the_contract_is_unchanged(redis_url: str) -> None:
    """Auth off (the default): no key needed, keys stored as before, no 401 anywhere."""
    settings = make_settings("redis", redis_url)
    assert not settings.auth_enabled and not settings.limits_enabled
    async with app_client(settings) as client:
        r = await client.post("/v1/chat", json={"session_id": "s1", "message": "hi"})
        assert r.status_code == 200
    assert redis.Redis.from_url(redis_url).keys("*") == [b"chat-history:s1"]


async def test_isolation_costs_no_round_trip_and_keys_carry_the_principal(
    redis_url: str, api_keys: dict[str, str], count_round_trips: list[int]
) -> None:
    settings: Settings = make_settings("redis", redis_url, **auth_settings(api_keys))
    server = redis.Redis.from_url(redis_url)
    async with app_client(settings) as client:
        await chat(client, api_keys["alice"], "warm", "hi")
        count_round_trips[0] = 0
        before = commandstats(server)
        for _ in range(5):
            await chat(client, api_keys["alice"], "s1", "again")
        after = commandstats(server)
    assert count_round_trips[0] == 10
    per_turn = commands_per_turn(before, after, 5)
    assert per_turn == {
        "lrange": 1, "evalsha": 1, "rpush": 1, "ltrim": 1, "expire": 1,  # the last 3: the script's
    }  # fmt: skip
    assert sorted(server.keys("*")) == [b"chat-history:alice/s1", b"chat-history:alice/warm"]


async def test_checkpointer_threads_keep_one_slot_per_principal_and_session(
    redis_url: str, api_keys: dict[str, str]
) -> None:
    settings = make_settings(
        "redis", redis_url, history_api="checkpointer", **auth_settings(api_keys)
    )
    async with app_client(settings) as client:
        await chat(client, api_keys["alice"], "s1", "hi")
    keys: list[bytes] = list(redis.Redis.from_url(redis_url).scan_iter("*"))
    assert keys and all(k.startswith(b"chat-history:ckpt:{alice/s1}:") for k in keys)
