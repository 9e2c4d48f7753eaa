"""The middleware stack: every response stamped and counted; oversized bodies refused unread."""

from __future__ import annotations

import json

from starlette.types import Message

from chat_history_k8s.main import create_app
from tests.conftest import app_client, make_settings

LIMIT = make_settings("memory").max_body_bytes


async def test_an_oversized_declared_body_is_refused_unread_stamped_and_counted() -> None:
    app = create_app(make_settings("memory"))
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body of an oversized request must not be read")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat", "raw_path": b"/v1/chat", "query_string": b"",
        "root_path": "", "server": ("app", 80), "client": ("127.0.0.1", 1234),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(LIMIT + 1).encode())],
    }  # fmt: skip
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
        metrics = app.state.runtime.metrics

    start, body = sent
    assert start["status"] == 413
    assert (b"x-served-by", b"memory-test") in start["headers"]
    assert json.loads(body["body"]) == {
        "error": {"code": "message_too_large", "message": "request body too large"}
    }
    sample = metrics.registry.get_sample_value
    labels = {"method": "POST", "route": "unmatched", "status": "413"}
    assert sample("chat_http_requests_total", labels) == 1
    assert sample("chat_errors_total", {"code": "message_too_large"}) == 1


async def test_a_body_at_the_declared_limit_reaches_the_route() -> None:
    async with app_client(make_settings("memory")) as client:
        r = await client.post(
            "/v1/chat", content=b"x" * LIMIT, headers={"content-type": "application/json"}
        )
        assert r.status_code == 422  # the route read it: not JSON
        assert r.json()["error"]["code"] == "invalid_request"
        assert r.headers["x-served-by"] == "memory-test"
        text = (await client.get("/metrics")).text
    assert 'chat_http_requests_total{method="POST",route="/v1/chat",status="422"} 1.0' in text
    assert 'chat_errors_total{code="message_too_large"}' not in text


async def test_unrouted_requests_are_stamped_and_counted_as_unmatched() -> None:
    async with app_client(make_settings("memory")) as client:
        r = await client.get("/nope")
        assert (r.status_code, r.headers["x-served-by"]) == (404, "memory-test")
        text = (await client.get("/metrics")).text
    assert 'chat_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
