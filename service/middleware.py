"""Pure ASGI middleware: `X-Served-By` on every response, a body-size guard, request counts."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import Runtime


class ServedByMiddleware:
    """Stamps `X-Served-By: <pod>` on every response (errors included), rejects a declared
    body far larger than any valid request with 413 before reading it, and counts requests by
    route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime: Runtime = scope["app"].state.runtime
        served_by = runtime.settings.pod_name.encode("latin-1", "replace")
        status = 500

        async def send_stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-served-by", served_by)]
            await send(message)

        try:
            if self._declared_too_large(scope, runtime):
                await self._reject_too_large(send_stamped, runtime)
            else:
                await self.app(scope, receive, send_stamped)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            runtime.metrics.requests.labels(scope["method"], path, str(status)).inc()

    @staticmethod
    def _declared_too_large(scope: Scope, runtime: Runtime) -> bool:
        # UTF-8 is at most 4 bytes a character, JSON escapes at most 6: allow for both.
        limit = runtime.settings.max_message_chars * 6 + 4096
        for name, value in scope["headers"]:
            if name == b"content-length":
                return value.isdigit() and int(value) > limit
        return False

    @staticmethod
    async def _reject_too_large(send: Send, runtime: Runtime) -> None:
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
