"""The OpenAPI document tells the truth: every status each operation answers is documented, and
nothing else is; every answer validates against the documented schema and media type; the
session-id pattern and the message rules are the ones the service applies."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.api.models import FAIL, FlakyModel
from tests.conftest import app_client, auth_settings, make_settings
from testsupport import RedisServer

Trigger = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
BIG = b"x" * (16_000 * 12 + 4097)  # over the body limit of the default MAX_MESSAGE_CHARS


def chat(message: str, session_id: str = "doc") -> Trigger:
    return lambda c: c.post("/v1/chat", json={"session_id": session_id, "message": message})


# Per operation and status, a request that gets that status from a running replica (503: with
# its Redis stopped). 500 is left out: documented on every operation, it is a bug when it occurs.
TRIGGERS: dict[tuple[str, str, int], Trigger] = {
    ("/v1/chat", "post", 200): chat("hello"),
    ("/v1/chat", "post", 413): chat("x" * 16_001),
    ("/v1/chat", "post", 422): chat(" "),
    ("/v1/chat", "post", 502): chat(FAIL),
    ("/v1/sessions/{session_id}/messages", "get", 200): lambda c: c.get(
        "/v1/sessions/doc/messages"
    ),
    ("/v1/sessions/{session_id}/messages", "get", 404): lambda c: c.get(
        "/v1/sessions/none/messages"
    ),
    ("/v1/sessions/{session_id}/messages", "get", 413): lambda c: c.request(
        "GET", "/v1/sessions/doc/messages", content=BIG
    ),
    ("/v1/sessions/{session_id}/messages", "get", 422): lambda c: c.get(
        "/v1/sessions/a%20b/messages"
    ),
    ("/v1/sessions/{session_id}", "delete", 204): lambda c: c.delete("/v1/sessions/gone"),
    ("/v1/sessions/{session_id}", "delete", 404): lambda c: c.delete("/v1/sessions/a%2Fb"),
    ("/v1/sessions/{session_id}", "delete", 413): lambda c: c.request(
        "DELETE", "/v1/sessions/gone", content=BIG
    ),
    ("/v1/sessions/{session_id}", "delete", 422): lambda c: c.delete("/v1/sessions/a%20b"),
}
for _path in ("/healthz", "/readyz", "/metrics", "/v1/info"):
    TRIGGERS[(_path, "get", 200)] = lambda c, p=_path: c.get(p)  # type: ignore[misc]  # bound default
    TRIGGERS[(_path, "get", 413)] = lambda c, p=_path: c.request("GET", p, content=BIG)  # type: ignore[misc]  # bound default
    TRIGGERS[(_path, "get", 422)] = lambda c, p=_path: c.get(f"{p}?q=%FF")  # type: ignore[misc]  # bound default
OUTAGE_TRIGGERS: dict[tuple[str, str, int], Trigger] = {
    ("/v1/chat", "post", 503): chat("hello"),
    ("/v1/sessions/{session_id}/messages", "get", 503): lambda c: c.get(
        "/v1/sessions/doc/messages"
    ),
    ("/v1/sessions/{session_id}", "delete", 503): lambda c: c.delete("/v1/sessions/doc"),
    ("/readyz", "get", 503): lambda c: c.get("/readyz"),
}


@pytest.fixture
async def client(own_redis: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings("redis", own_redis.url)
    async with app_client(settings, FlakyModel()) as c:
        yield c


def check_against(document: dict[str, Any], key: tuple[str, str, int], r: httpx.Response) -> None:
    path, method, status = key
    assert r.status_code == status, (key, r.text)
    documented = document["paths"][path][method]["responses"][str(status)]
    for header, spec in documented.get("headers", {}).items():
        assert not spec.get("required") or header.lower() in r.headers, (key, header)
    content = documented.get("content")
    if content is None:
        assert r.content == b"", key
        return
    media_type = r.headers["content-type"].split(";")[0]
    assert media_type in content, (key, media_type)
    if media_type == "application/json":
        schema = {**content[media_type]["schema"], "components": document["components"]}
        jsonschema_rs.Draft202012Validator(schema).validate(r.json())


async def test_every_documented_status_occurs_and_matches_its_schema(
    client: httpx.AsyncClient, own_redis: RedisServer
) -> None:
    document = (await client.get("/openapi.json")).json()
    documented = {
        (path, method, int(status))
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        for status in operation["responses"]
        if status != "500"
    }
    assert documented == set(TRIGGERS) | set(OUTAGE_TRIGGERS)
    await chat("hello")(client)  # the session the 200s read
    for key, trigger in TRIGGERS.items():
        check_against(document, key, await trigger(client))
    own_redis.stop()
    for key, trigger in OUTAGE_TRIGGERS.items():
        check_against(document, key, await trigger(client))


async def test_the_document_has_one_error_schema_and_no_framework_leftovers(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    text = str(document)
    assert "HTTPValidationError" not in text and "'detail'" not in text
    operation_ids = [
        operation["operationId"]
        for methods in document["paths"].values()
        for operation in methods.values()
    ]
    assert len(operation_ids) == len(set(operation_ids)) == 7
    assert all("head" not in methods for methods in document["paths"].values())
    for methods in document["paths"].values():
        for operation in methods.values():
            error = operation["responses"]["500"]["content"]["application/json"]["schema"]
            assert error["allOf"][0] == {"$ref": "#/components/schemas/Error"}
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


@pytest.mark.parametrize(
    ("session_id", "valid"),
    [
        ("a", True),
        ("Az09._:@-", True),
        ("...", True),
        (".a", True),
        ("a" * 128, True),
        (".", False),
        ("..", False),
        ("a" * 129, False),
        ("a b", False),
        ("café", False),
        ("a\n", False),
    ],
)
async def test_the_documented_session_id_pattern_is_the_rule_the_service_applies(
    client: httpx.AsyncClient, session_id: str, valid: bool
) -> None:
    document = (await client.get("/openapi.json")).json()
    parameter = document["paths"]["/v1/sessions/{session_id}"]["delete"]["parameters"][0]
    schema = parameter["schema"]
    body_schema = document["components"]["schemas"]["ChatRequest"]["properties"]["session_id"]
    assert body_schema["anyOf"][0] == {k: v for k, v in schema.items() if k != "title"}
    documented = (
        schema["minLength"] <= len(session_id) <= schema["maxLength"]
        and re.search(schema["pattern"], session_id) is not None
        and "\n" not in session_id  # a JSON Schema `$` matches only at the very end
    )
    assert documented is valid
    r = await client.post("/v1/chat", json={"session_id": session_id, "message": "hi"})
    assert (r.status_code == 200) is valid, r.text


async def test_the_documented_message_rules_are_the_settings(own_redis: RedisServer) -> None:
    settings = make_settings("redis", own_redis.url, max_message_chars=50)
    async with app_client(settings) as client:
        document = (await client.get("/openapi.json")).json()
        message = document["components"]["schemas"]["ChatRequest"]["properties"]["message"]
        assert (message["minLength"], message["maxLength"], message["pattern"]) == (1, 50, r"\S")
        for text, status in (("y" * 50, 200), ("y" * 51, 413), ("\t \n", 422)):
            r = await client.post("/v1/chat", json={"message": text})
            assert r.status_code == status
            assert (re.search(message["pattern"], text) is not None and len(text) <= 50) is (
                status == 200
            )


async def test_with_keys_and_limits_on_the_document_adds_401_429_and_the_schemes(
    own_redis: RedisServer, api_keys: dict[str, str]
) -> None:
    """AUTH_ENABLED and the limits add exactly what they answer: 401 (with `WWW-Authenticate`)
    on the operations that act for a principal, 429 (with `Retry-After`) on a turn, and the two
    ways to send a key as security schemes; the live answers validate against them."""
    settings = make_settings("redis", own_redis.url, **auth_settings(api_keys, rate_limit_turns=1))
    async with app_client(settings, FlakyModel()) as c:
        document = (await c.get("/openapi.json")).json()
        assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        with_401 = {
            (path, method)
            for path, methods in document["paths"].items()
            for method, operation in methods.items()
            if "401" in operation["responses"]
        }
        assert with_401 == {
            ("/v1/chat", "post"),
            ("/v1/sessions/{session_id}/messages", "get"),
            ("/v1/sessions/{session_id}", "delete"),
        }
        for path, method in with_401:
            assert document["paths"][path][method]["security"] == [{"bearer": []}, {"apiKey": []}]
        assert "security" not in document["paths"]["/healthz"]["get"]
        assert [
            path for path, methods in document["paths"].items()
            for operation in methods.values() if "429" in operation["responses"]
        ] == ["/v1/chat"]  # fmt: skip

        check_against(document, ("/v1/chat", "post", 401), await chat("hello")(c))
        key = {"X-API-Key": api_keys["alice"]}
        ok = await c.post("/v1/chat", json={"session_id": "s", "message": "hi"}, headers=key)
        check_against(document, ("/v1/chat", "post", 200), ok)
        over = await c.post("/v1/chat", json={"session_id": "s", "message": "hi"}, headers=key)
        check_against(document, ("/v1/chat", "post", 429), over)
