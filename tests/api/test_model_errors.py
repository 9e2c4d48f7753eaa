"""A failed model call answers 502 `model_error` and stores nothing, in every API and backend;
neither does a turn cancelled before its model answered, nor one whose model answered text no
store can take, nor one whose write failed after the model answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis
from langgraph.checkpoint.memory import InMemorySaver

from chat_history_k8s.config import Settings
from chat_history_k8s.history.memory import MemoryStore
from tests.api.models import AFTER, BAD_REPLY, FAIL, HOLD, FlakyModel
from tests.conftest import app_client, make_settings, stored_sessions
from testsupport import await_until


@pytest.fixture
async def flaky_client(backend_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(backend_settings, FlakyModel()) as client:
        yield client


async def messages(client: httpx.AsyncClient, session_id: str) -> list[tuple[str, str]]:
    r = await client.get(f"/v1/sessions/{session_id}/messages")
    if r.status_code == 404:
        return []
    return [(m["type"], m["content"]) for m in r.json()["messages"]]


async def test_a_failed_model_call_is_a_502_and_leaves_the_session_unchanged(
    flaky_client: httpx.AsyncClient, backend: str, history_api: str, request: pytest.FixtureRequest
) -> None:
    ok = await flaky_client.post("/v1/chat", json={"session_id": "s", "message": "my name is Ada"})
    assert ok.status_code == 200
    before = await messages(flaky_client, "s")

    failed = await flaky_client.post("/v1/chat", json={"session_id": "s", "message": f"{FAIL} hi"})
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"] == {
        "code": "model_error",
        "message": "the chat model failed: RuntimeError",
    }
    assert failed.headers["x-served-by"]
    assert await messages(flaky_client, "s") == before  # no orphan human message

    after = await flaky_client.post(
        "/v1/chat", json={"session_id": "s", "message": "what is my name?"}
    )
    assert after.json()["history_length"] == 2
    assert after.json()["reply"] == "Your name is Ada. I can see 2 earlier messages."

    # A session whose first turn fails does not come into existence.
    first = await flaky_client.post("/v1/chat", json={"session_id": "new", "message": FAIL})
    assert first.status_code == 502
    assert (await flaky_client.get("/v1/sessions/new/messages")).status_code == 404
    if backend == "redis":
        with redis.Redis.from_url(request.getfixturevalue("redis_url")) as server:
            assert stored_sessions(server, history_api) == 1
    metrics = (await flaky_client.get("/metrics")).text
    assert 'chat_errors_total{code="model_error"} 2.0' in metrics
    assert f'chat_turns_total{{backend="{backend}"}} 2.0' in metrics


async def test_a_turn_cancelled_during_its_model_call_stores_nothing(
    backend: str, history_api: str, request: pytest.FixtureRequest
) -> None:
    """What a shutdown that outlasts the grace period does to a turn in flight."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    model = FlakyModel()
    async with app_client(make_settings(backend, url, history_api=history_api), model) as client:
        await client.post("/v1/chat", json={"session_id": "c", "message": "my name is Ada"})
        before = await messages(client, "c")
        turn = asyncio.create_task(
            client.post("/v1/chat", json={"session_id": "c", "message": f"{HOLD} bye"})
        )

        async def called() -> bool:
            return model.calls == 2

        await await_until(called, timeout_s=10, what="the model call")
        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        assert await messages(client, "c") == before
        after = await client.post("/v1/chat", json={"session_id": "c", "message": "again"})
        assert after.json()["history_length"] == 2  # and the session is not left busy


async def test_a_reply_that_is_not_valid_unicode_is_a_502_and_leaves_the_session_unchanged(
    flaky_client: httpx.AsyncClient, backend: str, history_api: str, request: pytest.FixtureRequest
) -> None:
    """A provider answering a lone surrogate: no store could encode it, and on memory a stored
    one would break every later read of the session. The turn fails before anything is stored."""
    ok = await flaky_client.post("/v1/chat", json={"session_id": "u", "message": "my name is Ada"})
    assert ok.status_code == 200
    before = await messages(flaky_client, "u")
    for session_id in ("u", "new-u"):
        r = await flaky_client.post(
            "/v1/chat", json={"session_id": session_id, "message": f"{BAD_REPLY} hi"}
        )
        assert r.status_code == 502, r.text
        assert r.json()["error"] == {
            "code": "model_error",
            "message": "the chat model answered text that is not valid Unicode",
        }
    assert await messages(flaky_client, "u") == before
    assert await messages(flaky_client, "new-u") == []
    after = await flaky_client.post("/v1/chat", json={"session_id": "u", "message": "again"})
    assert after.status_code == 200 and after.json()["history_length"] == 2
    if backend == "redis":
        with redis.Redis.from_url(request.getfixturevalue("redis_url")) as server:
            assert stored_sessions(server, history_api) == 1


async def test_a_store_failure_after_the_model_answered_leaves_the_session_unchanged(
    backend: str,
    history_api: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model has answered, then the write fails: Redis refuses writes (full, `noeviction`,
    as a real outage of memory does), or the in-process store raises (injected). The client
    gets the error, and the session is exactly as it was: no human message without its reply."""
    model = FlakyModel()
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    if url is not None:
        server = redis.Redis.from_url(url)

        def fill_redis() -> None:
            server.config_set("maxmemory-policy", "noeviction")
            server.config_set("maxmemory", "1")  # below what it holds: every write refused

        model.after_answer = fill_redis
        expected = (503, "history_unavailable")
    else:
        armed = {"on": False}

        def arm() -> None:
            armed["on"] = True

        def failing(original: Callable[..., Any]) -> Callable[..., Any]:
            def write(*args: Any, **kwargs: Any) -> Any:
                if armed["on"]:
                    raise RuntimeError("injected store failure")
                return original(*args, **kwargs)

            async def awrite(*args: Any, **kwargs: Any) -> Any:
                if armed["on"]:
                    raise RuntimeError("injected store failure")
                return await original(*args, **kwargs)

            return awrite if asyncio.iscoroutinefunction(original) else write

        monkeypatch.setattr(MemoryStore, "append", failing(MemoryStore.append))
        monkeypatch.setattr(InMemorySaver, "aput", failing(InMemorySaver.aput))
        model.after_answer = arm
        expected = (500, "internal_error")

    settings = make_settings(backend, url, history_api=history_api)
    try:
        async with app_client(settings, model, raise_app_exceptions=False) as client:
            first = {"session_id": "w", "message": "my name is Ada"}
            assert (await client.post("/v1/chat", json=first)).status_code == 200
            before = await messages(client, "w")
            doomed = {"session_id": "w", "message": f"{AFTER} x"}
            failed = await client.post("/v1/chat", json=doomed)
            assert (failed.status_code, failed.json()["error"]["code"]) == expected, failed.text
            assert model.calls == 2  # the model did run
            if url is not None:
                server.config_set("maxmemory", "0")
            else:
                armed["on"] = False
            assert await messages(client, "w") == before
            again = await client.post(
                "/v1/chat", json={"session_id": "w", "message": "what is my name?"}
            )
            assert again.status_code == 200, again.text
            assert again.json()["history_length"] == 2
            assert again.json()["reply"].startswith("Your name is Ada.")
    finally:
        if url is not None:
            server.config_set("maxmemory", "0")
            server.close()
