"""Pure ASGI middleware, one job each: request counts, `X-Served-By`, a body-size guard.

`install_middleware` stacks them so that every response, the guard's 413 included, is stamped
and then counted.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
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


class BodySizeLimitMiddleware:
    """Answers 413 `message_too_large` (counted in `chat_errors`) to a request whose declared
    `Content-Length` is far larger than any valid request, before reading its body.

    The limit allows for the longest accepted message in the worst encoding; anything below it
    reaches the route, which applies the exact `MAX_MESSAGE_CHARS` check.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = _runtime(scope)
        if self._declared_too_large(scope, runtime.settings.max_message_chars):
            await self._reject(send, runtime)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    def _declared_too_large(scope: Scope, max_message_chars: int) -> bool:
        # UTF-8 is at most 4 bytes a character, JSON escapes at most 6: allow for both.
        limit = max_message_chars * 6 + 4096
        for name, value in scope["headers"]:
            if name == b"content-length":
                return bool(value.isdigit() and int(value) > limit)
        return False

    @staticmethod
    async def _reject(send: Send, runtime: Runtime) -> None:
        runtime.metrics.errors.labels("message_too_large").inc()
        body = json.dumps(
            {"error": {"code": "message_too_large", "message": "request body too large"}}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
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
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(ServedByMiddleware)
    app.add_middleware(RequestCountMiddleware)
