"""CORS for the exact origins in `CORS_ALLOW_ORIGINS`; none by default."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from chat_history_k8s.api.deps import Runtime


class _Preflight:
    """Stands for the route of a preflight in the scope, where the request counter reads the
    template (`path`) of the route that answered."""

    path = "cors_preflight"


_PREFLIGHT = _Preflight()


def _header(scope: Scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope["headers"])


class CorsMiddleware:
    """Answers CORS for the origins listed in `CORS_ALLOW_ORIGINS` (Starlette's
    `CORSMiddleware`, built once the lifespan has read the settings); passes everything through
    untouched when the list is empty, which is the default.

    Only what the page needs is allowed: GET, POST, DELETE with `Content-Type` and
    `Authorization` or `X-API-Key` (an API key), no cookies; `X-Served-By` and `Retry-After`
    are readable by the page.
    A preflight is answered here, before any routing: `/metrics` counts it as
    `route="cors_preflight"`, not `unmatched`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: tuple[tuple[str, ...], ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime: Runtime = scope["app"].state.runtime
        origins = runtime.settings.cors_origins
        if not origins:
            await self.app(scope, receive, send)
            return
        if self._cors is None or self._cors[0] != origins:
            self._cors = (origins, self._build(origins))
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            scope["route"] = _PREFLIGHT
        await self._cors[1](scope, receive, send)

    def _build(self, origins: tuple[str, ...]) -> ASGIApp:
        return CORSMiddleware(
            self.app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key"],
            expose_headers=["X-Served-By", "Retry-After"],
            max_age=600,
        )
