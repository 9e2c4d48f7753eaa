"""Pure ASGI middleware, one job each: request counts, `X-Served-By`, a request guard (encoding
of the path and query, body size).

`install_middleware` stacks them so that every response, the guard's 413 included, is stamped
and then counted.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat_history_k8s.api.deps import Runtime


def _runtime(scope: Scope) -> Runtime:
    # Built by the lifespan, so it is read per request rather than when the stack is built.
    runtime: Runtime = scope["app"].state.runtime
    return runtime


class RequestCountMiddleware:
    """Counts every HTTP request in `chat_http_requests` by method, route template and status.

    The route is the template the router matched (`unmatched` when none did, e.g. a request
    refused before routing); a request that raised before answering counts as 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            # The router records the matched route in the (shared) scope.
            path = getattr(scope.get("route"), "path", "unmatched")
            _runtime(scope).metrics.requests.labels(scope["method"], path, str(status)).inc()


class ServedByMiddleware:
    """Stamps `X-Served-By: <pod name>` on every HTTP response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        served_by = _runtime(scope).settings.pod_name.encode("latin-1", "replace")

        async def send_stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-served-by", served_by)]
            await send(message)

        await self.app(scope, receive, send_stamped)


class BodyTooLarge(HTTPException):
    """Raised by `RequestGuardMiddleware`'s `receive` once a body has grown past the limit: an
    `HTTPException`, so FastAPI's body reader lets it through to the error handlers (413
    `message_too_large`) instead of calling it a parse error."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class RequestGuardMiddleware:
    """Checks what every request brings before the app sees it:

    - its path and query string percent-decode to valid UTF-8, else 422 `invalid_request`
      (uvicorn would decode them with replacement characters, silently);
    - its body stays within `Settings.max_body_bytes`: a declared `Content-Length` above it is
      answered 413 `message_too_large` before a byte is read, and a body sent without one
      (chunked) is counted as it streams in, the 413 coming as soon as the count passes the
      limit. So a replica never holds more than the limit of any request body, whatever is sent.

    The limit allows for the longest accepted message in the costliest encoding (see
    `Settings.max_body_bytes`); the route then applies the exact `MAX_MESSAGE_CHARS` check.
    Rejections are counted in `chat_errors` like any other error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = _runtime(scope)
        limit = runtime.settings.max_body_bytes
        if not _decodes(scope.get("raw_path", b"")) or not _decodes(scope["query_string"]):
            message = "the path and query must be valid UTF-8 once percent-decoded"
            await _reject(send, runtime, 422, "invalid_request", message)
            return
        if _declared_length(scope) > limit:
            await _reject(send, runtime, 413, "message_too_large", "request body too large")
            return
        received = 0
        started = False

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def send_observed(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_counted, send_observed)
        except BodyTooLarge:
            # Read outside a route (no error handler saw it): answer here if nothing was sent.
            if started:
                raise
            await _reject(send, runtime, 413, "message_too_large", "request body too large")


def _decodes(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():  # uvicorn refuses a malformed one
            # More digits than any real length: too large, without converting a huge number.
            return int(value) if len(value) <= 18 else 10**18
    return 0


async def _reject(send: Send, runtime: Runtime, status: int, code: str, message: str) -> None:
    runtime.metrics.errors.labels(code).inc()
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_middleware(app: Starlette) -> None:
    """Adds the middleware, outermost first: count, stamp, guard (Starlette wraps each added
    middleware around the ones added before it, hence the reverse order below)."""
    app.add_middleware(RequestGuardMiddleware)
    app.add_middleware(ServedByMiddleware)
    app.add_middleware(RequestCountMiddleware)
