"""The HTTP contract of DESIGN.md, for both backends and both memory APIs."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import app_client, make_settings

SERVED_BY = {"memory": "memory-test", "redis": "redis-test"}
# What a memory replica reports holding, per API.
MEMORY_SESSIONS = {
    "message-history": "chat_history_memory_sessions",
    "checkpointer": "chat_checkpoint_memory_threads",
}
# Redis round trips of one turn, per API (the checkpointer: lease, read, write, release).
TURN_ROUND_TRIPS = {
    "message-history": {"read": 1, "append": 1},
    "checkpointer": {"acquire": 1, "get": 1, "put": 1, "release": 1},
}


async def assert_stored_nothing(
    client: httpx.AsyncClient, backend: str, history_api: str, request: pytest.FixtureRequest
) -> None:
    """No turn counted, and the store empty: Redis holds no key, memory no session."""
    metrics = (await client.get("/metrics")).text
    assert f'chat_turns_total{{backend="{backend}"}}' not in metrics
    if backend == "redis":
        assert redis.Redis.from_url(request.getfixturevalue("redis_url")).dbsize() == 0
    else:
        assert f"{MEMORY_SESSIONS[history_api]} 0.0" in metrics


async def chat(
    client: httpx.AsyncClient, message: str, session_id: str | None = None
) -> dict[str, Any]:
    body = (
        {"message": message}
        if session_id is None
        else {"session_id": session_id, "message": message}
    )
    r = await client.post("/v1/chat", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def test_a_turn_answers_the_contract_fields(client: httpx.AsyncClient, backend: str) -> None:
    r = await client.post("/v1/chat", json={"session_id": "s-1", "message": "hello"})
    assert r.status_code == 200
    assert r.headers["x-served-by"] == SERVED_BY[backend]
    assert r.json() == {
        "session_id": "s-1",
        "reply": 'You said: "hello". I can see 0 earlier messages.',
        "served_by": SERVED_BY[backend],
        "backend": backend,
        "history_length": 0,
    }


async def test_a_missing_session_id_gets_a_new_uuid4(client: httpx.AsyncClient) -> None:
    first, second = await chat(client, "hi"), await chat(client, "hi")
    assert uuid.UUID(first["session_id"]).version == 4
    assert first["session_id"] != second["session_id"]


async def test_the_model_recalls_what_the_history_holds(client: httpx.AsyncClient) -> None:
    assert "Ada" in (await chat(client, "Hello, my name is Ada.", "r"))["reply"]
    answer = await chat(client, "What is my name?", "r")
    assert answer["history_length"] == 2
    assert answer["reply"] == "Your name is Ada. I can see 2 earlier messages."
    stranger = await chat(client, "What is my name?", "someone-else")
    assert stranger["reply"].startswith("I don't know your name")


async def test_transcript_lists_messages_oldest_first(
    client: httpx.AsyncClient, backend: str
) -> None:
    await chat(client, "one", "t")
    await chat(client, "two", "t")
    r = await client.get("/v1/sessions/t/messages")
    assert r.status_code == 200
    assert r.headers["x-served-by"] == SERVED_BY[backend]
    body = r.json()
    assert (body["session_id"], body["served_by"], body["backend"]) == (
        "t",
        SERVED_BY[backend],
        backend,
    )
    assert [(m["type"], m["content"]) for m in body["messages"]] == [
        ("human", "one"),
        ("ai", 'You said: "one". I can see 0 earlier messages.'),
        ("human", "two"),
        ("ai", 'You said: "two". I can see 2 earlier messages.'),
    ]


async def test_unknown_session_is_404_with_the_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/sessions/never-seen/messages")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "session_not_found"
    assert "x-served-by" in r.headers


async def test_delete_is_idempotent_and_forgets_the_session(client: httpx.AsyncClient) -> None:
    await chat(client, "remember me", "d")
    for _ in range(2):
        r = await client.delete("/v1/sessions/d")
        assert r.status_code == 204 and r.content == b""
    assert (await client.get("/v1/sessions/d/messages")).status_code == 404
    assert (await chat(client, "again", "d"))["history_length"] == 0


async def test_window_bounds_what_the_model_sees(client: httpx.AsyncClient) -> None:
    for i in range(15):  # 30 messages stored; the default window is 20
        await chat(client, f"m{i}", "w")
    last = await chat(client, "last", "w")
    assert last["history_length"] == 30
    assert "I can see 20 earlier messages." in last["reply"]


async def test_probes_info_and_unknown_routes(
    client: httpx.AsyncClient, backend: str, history_api: str
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["history"]["ok"] is True
    info = (await client.get("/v1/info")).json()
    assert info["served_by"] == SERVED_BY[backend] and info["backend"] == backend
    assert info["history_api"] == history_api
    assert info["max_message_chars"] == 16_000 and info["history_window_messages"] == 20
    missing = await client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await client.put("/v1/chat")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert all(r.headers.get("x-served-by") for r in (ready, missing, wrong))


async def test_metrics_count_turns_errors_and_latency(
    client: httpx.AsyncClient, backend: str, history_api: str
) -> None:
    await chat(client, "hi", "m")
    await client.post("/v1/chat", json={"message": ""})
    text = (await client.get("/metrics")).text
    assert f'chat_turns_total{{backend="{backend}"}} 1.0' in text
    assert 'chat_errors_total{code="invalid_request"} 1.0' in text
    assert f'chat_history_read_seconds_count{{backend="{backend}"}} 1.0' in text
    assert f'chat_history_append_seconds_count{{backend="{backend}"}} 1.0' in text
    assert 'chat_http_requests_total{method="POST",route="/v1/chat",status="200"} 1.0' in text
    if backend == "redis":
        for op, count in TURN_ROUND_TRIPS[history_api].items():
            assert f'chat_history_redis_round_trips_total{{op="{op}"}} {count:.1f}' in text
        assert text.count("chat_history_redis_round_trips_total{") == len(
            TURN_ROUND_TRIPS[history_api]
        )
    else:
        assert f"{MEMORY_SESSIONS[history_api]} 1.0" in text
    if (backend, history_api) == ("memory", "message-history"):
        assert "chat_history_memory_messages 2.0" in text


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


BAD = "invalid_request"
BAD_INPUT = [
    pytest.param(b"{not json", 422, BAD, id="malformed-json"),
    pytest.param(b"[]", 422, BAD, id="not-an-object"),
    pytest.param(body(session_id="victim"), 422, BAD, id="missing-message"),
    pytest.param(body(session_id="victim", message=""), 422, BAD, id="empty"),
    pytest.param(body(session_id="victim", message=" \n\t"), 422, BAD, id="blank"),
    pytest.param(body(session_id="victim", message=42), 422, BAD, id="not-a-string"),
    pytest.param(body(session_id=7, message="x"), 422, BAD, id="numeric-id"),
    pytest.param(body(session_id="victim", message="x", role="system"), 422, BAD, id="extra"),
    pytest.param(body(session_id="", message="x"), 422, BAD, id="id-empty"),
    pytest.param(body(session_id="a" * 129, message="x"), 422, BAD, id="id-129"),
    pytest.param(body(session_id="../x", message="x"), 422, BAD, id="id-dotdot-slash"),
    pytest.param(body(session_id="a b", message="x"), 422, BAD, id="id-space"),
    pytest.param(body(session_id="a\x00b", message="x"), 422, BAD, id="id-nul"),
    pytest.param(body(session_id="a\nb", message="x"), 422, BAD, id="id-newline"),
    pytest.param(body(session_id="caf\u00e9", message="x"), 422, BAD, id="id-non-ascii"),
    pytest.param(body(session_id=".", message="x"), 422, BAD, id="id-dot"),
    pytest.param(body(session_id="..", message="x"), 422, BAD, id="id-dotdot"),
    pytest.param(body(session_id="victim", message="\ud800"), 422, BAD, id="lone-surrogate"),
    pytest.param(body(session_id="victim", message="a\udfffb"), 422, BAD, id="lone-low-surrogate"),
    pytest.param(
        body(session_id="victim", message="x" * 16_001), 413, "message_too_large", id="big"
    ),
    pytest.param(
        body(session_id="victim", message="x" * 200_000), 413, "message_too_large", id="huge"
    ),
]


@pytest.mark.parametrize(("payload", "status", "code"), BAD_INPUT)
async def test_bad_input_is_rejected_with_the_error_body_and_stores_nothing(
    client: httpx.AsyncClient,
    backend: str,
    history_api: str,
    payload: bytes,
    status: int,
    code: str,
    request: pytest.FixtureRequest,
) -> None:
    headers = {"content-type": "application/json"}
    r = await client.post("/v1/chat", content=payload, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert r.headers["x-served-by"] == SERVED_BY[backend]
    assert (await client.get("/v1/sessions/victim/messages")).status_code == 404
    await assert_stored_nothing(client, backend, history_api, request)


async def test_a_message_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    assert (await chat(client, "y" * 16_000, "limit"))["history_length"] == 0


@pytest.mark.parametrize("bad_id", ["a%20b", "a" * 129, "caf%C3%A9", "a%0Ab", "a%00b", "%3Cx%3E"])
async def test_bad_session_ids_in_the_path_are_422(client: httpx.AsyncClient, bad_id: str) -> None:
    for r in (
        await client.get(f"/v1/sessions/{bad_id}/messages"),
        await client.delete(f"/v1/sessions/{bad_id}"),
    ):
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "invalid_request"


async def test_a_path_that_escapes_the_session_segment_matches_no_route(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/v1/sessions/x%2F..%2Fy/messages")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_every_allowed_session_id_character_works(client: httpx.AsyncClient) -> None:
    sid = "Az09._:@-" + "x" * 119  # exactly 128
    await chat(client, "hi", sid)
    assert (await client.get(f"/v1/sessions/{sid}/messages")).status_code == 200


async def test_the_cap_keeps_the_newest_whole_turns_and_the_window_bounds_the_model(
    backend: str, history_api: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    settings = make_settings(
        backend, url, history_api=history_api, history_max_messages=6, history_window_messages=2
    )
    async with app_client(settings) as client:
        turns = [await chat(client, f"m{i}", "cap") for i in range(5)]
        assert [t["history_length"] for t in turns] == [0, 2, 4, 6, 6]
        assert all(t["reply"].endswith(" I can see 2 earlier messages.") for t in turns[1:])
        body = (await client.get("/v1/sessions/cap/messages")).json()
        assert [m["content"] for m in body["messages"][::2]] == ["m2", "m3", "m4"]
