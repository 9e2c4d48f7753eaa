"""Hostile requests, for both backends and both memory APIs: invalid Unicode anywhere, bodies
that are not JSON or not what they say, unknown routes and methods. Each gets the one error
body with a consistent status, names nothing internal, and stores nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.test_chat import SERVED_BY, assert_stored_nothing

JSON = {"content-type": "application/json"}
INVALID = "invalid_request"


async def assert_error(r: httpx.Response, status: int, code: str, backend: str) -> str:
    """`r` is `status` with exactly `{"error": {"code": code, "message": ...}}` and is stamped;
    returns the message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-served-by"] == SERVED_BY[backend]
    body = r.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message"]
    assert body["error"]["code"] == code and body["error"]["message"]
    message: str = body["error"]["message"]
    for internal in ("Traceback", ".py", "127.0.0.1", "redis://", "0x"):
        assert internal not in message
    return message


BODIES = [
    # Invalid Unicode, escaped or raw, in values and in keys.
    pytest.param(b'{"session_id": "victim", "message": "\\ud800"}', id="escaped-lone-surrogate"),
    pytest.param(b'{"session_id": "victim", "message": "\xff"}', id="raw-invalid-utf8"),
    pytest.param(b'{"session_id": "victim", "message": "\xed\xa0\x80"}', id="raw-utf8-surrogate"),
    pytest.param(b'{"session_id": "victim", "message": "\xc0\xaf"}', id="overlong-utf8"),
    pytest.param(b'{"session_id": "vic\\udc00tim", "message": "x"}', id="surrogate-in-id"),
    pytest.param(b'{"session_id": "victim", "message": "x", "\\ud800": 1}', id="surrogate-key"),
    pytest.param(b'{"session_id": "victim", "\xfe\xff": "x"}', id="invalid-utf8-key"),
    pytest.param(b'\xef\xbb\xbf{"session_id": "victim", "message": "x"}', id="utf8-bom"),
    pytest.param('{"session_id": "victim", "message": "x"}'.encode("utf-16"), id="utf-16"),
    # Not JSON, or JSON no parser should take.
    pytest.param(b'{"session_id": "victim", "message": "x"', id="truncated"),
    pytest.param(b'{"session_id": "victim", "message": "x"} trailing', id="trailing-garbage"),
    pytest.param(b'{"session_id": "victim", "message": NaN}', id="nan"),
    pytest.param(b'{"session_id": "victim", "message": 1e999}', id="infinity"),
    pytest.param(
        b'{"session_id": "victim", "message": ' + b"[" * 2000 + b"]" * 2000 + b"}", id="nested-2000"
    ),
    pytest.param(b"[" * 150_000, id="unclosed-150k"),
    pytest.param(
        b'{"session_id": "victim", "message": "x", "extra": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        id="nested-extra-field",
    ),
    pytest.param(b"", id="empty-body"),
    pytest.param(b"null", id="null"),
]


@pytest.mark.parametrize("payload", BODIES)
async def test_bodies_that_are_not_valid_json_text_are_422_and_store_nothing(
    client: httpx.AsyncClient,
    backend: str,
    history_api: str,
    payload: bytes,
    request: pytest.FixtureRequest,
) -> None:
    r = await client.post("/v1/chat", content=payload, headers=JSON)
    await assert_error(r, 422, INVALID, backend)
    assert (await client.get("/v1/sessions/victim/messages")).status_code == 404
    await assert_stored_nothing(client, backend, history_api, request)


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "text/json"],
)
async def test_a_body_that_does_not_say_it_is_json_is_422_unread(
    client: httpx.AsyncClient,
    backend: str,
    history_api: str,
    content_type: str | None,
    request: pytest.FixtureRequest,
) -> None:
    payload = json.dumps({"session_id": "victim", "message": "hello"}).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    r = await client.post("/v1/chat", content=payload, headers=headers)
    message = await assert_error(r, 422, INVALID, backend)
    assert message == "Content-Type must be application/json"
    await assert_stored_nothing(client, backend, history_api, request)


async def test_json_with_parameters_or_a_json_suffix_is_json(client: httpx.AsyncClient) -> None:
    payload = json.dumps({"session_id": "ok", "message": "hello"}).encode()
    for content_type in ("application/json; charset=utf-8", "application/vnd.chat+json"):
        r = await client.post("/v1/chat", content=payload, headers={"content-type": content_type})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "target",
    [
        "/v1/sessions/%FF/messages",
        "/v1/sessions/%ED%A0%80/messages",  # a surrogate, UTF-8 encoded
        "/v1/sessions/a%C0%AF/messages",  # overlong
        "/v1/sessions/victim/messages?q=%FF",
        "/v1/info?%FE=1",
        "/healthz?x=%ED%A0%80",
        "/nope/%FF",  # before routing: invalid whatever the route
    ],
)
async def test_invalid_utf8_in_the_path_or_query_is_422(
    client: httpx.AsyncClient,
    backend: str,
    history_api: str,
    target: str,
    request: pytest.FixtureRequest,
) -> None:
    for method in ("GET", "DELETE"):
        r = await client.request(method, target)
        await assert_error(r, 422, INVALID, backend)
    r = await client.post(target, content=b'{"session_id": "victim", "message": "x"}', headers=JSON)
    await assert_error(r, 422, INVALID, backend)
    await assert_stored_nothing(client, backend, history_api, request)


async def test_unknown_routes_and_methods_have_the_error_body_and_allow(
    client: httpx.AsyncClient, backend: str
) -> None:
    await assert_error(await client.get("/nope"), 404, "not_found", backend)
    await assert_error(await client.get("/v1/sessions/x/nope"), 404, "not_found", backend)
    for method, path, allow in [
        ("PUT", "/v1/chat", "POST"),
        ("GET", "/v1/chat", "POST"),
        ("POST", "/v1/sessions/x/messages", "GET, HEAD"),
        ("PATCH", "/v1/sessions/x", "DELETE"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("OPTIONS", "/metrics", "GET, HEAD"),
        ("TRACE", "/v1/info", "GET, HEAD"),
    ]:
        r = await client.request(method, path)
        await assert_error(r, 405, "method_not_allowed", backend)
        assert r.headers["allow"] == allow, (method, path)


async def test_head_answers_every_get_route_without_a_body(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat", json={"session_id": "h", "message": "hi"})
    for path in ("/healthz", "/readyz", "/metrics", "/v1/info", "/v1/sessions/h/messages", "/"):
        get, head = await client.get(path), await client.head(path)
        assert (head.status_code, get.status_code) == (200, 200), path
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers["x-served-by"]
    assert (await client.head("/v1/sessions/none/messages")).status_code == 404


@pytest.mark.parametrize(
    "character",
    ["\U0001f600", "\u00e9", "\ufffd", "\x00"],
    ids=["emoji-12-bytes", "bmp-6-bytes", "replacement-char", "nul"],
)
async def test_a_max_length_message_written_with_escapes_is_accepted(
    client: httpx.AsyncClient, character: str
) -> None:
    """16,000 characters, every one a JSON escape (an emoji is two: `\\ud83d\\ude00`, 12 bytes):
    the body-size guard must let it through to the character count, which accepts it."""
    message = character * 16_000
    payload = json.dumps({"session_id": "escaped", "message": message}, ensure_ascii=True)
    r = await client.post("/v1/chat", content=payload.encode(), headers=JSON)
    assert r.status_code == 200, r.text[:200]
    transcript = (await client.get("/v1/sessions/escaped/messages")).json()["messages"]
    assert transcript[0]["content"] == message
    one_more = json.dumps({"session_id": "escaped", "message": message + character})
    r = await client.post("/v1/chat", content=one_more.encode(), headers=JSON)
    assert r.status_code == 413 and r.json()["error"]["code"] == "message_too_large"


async def test_a_body_over_the_limit_is_413_before_parsing(
    client: httpx.AsyncClient, backend: str, history_api: str, request: pytest.FixtureRequest
) -> None:
    limit = 16_000 * 12 + 4096
    padding = b" " * limit  # whitespace is valid JSON: only the size is wrong
    payload = b'{"session_id": "victim",' + padding + b'"message": "x"}'
    assert len(payload) > limit
    r = await client.post("/v1/chat", content=payload, headers=JSON)
    await assert_error(r, 413, "message_too_large", backend)
    await assert_stored_nothing(client, backend, history_api, request)
