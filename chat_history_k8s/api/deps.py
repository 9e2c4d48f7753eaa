"""Request-scoped access to what the lifespan built, as `Annotated` dependency aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from chat_history_k8s.auth import KeyRing
from chat_history_k8s.config import Settings
from chat_history_k8s.conversation import Conversations
from chat_history_k8s.errors import ApiError
from chat_history_k8s.limits import Limiter
from chat_history_k8s.metrics import Metrics


@dataclass(frozen=True)
class Runtime:
    """What one running app owns: built in the lifespan, released after it."""

    settings: Settings
    conversations: Conversations
    metrics: Metrics
    keyring: KeyRing | None = None  # AUTH_ENABLED
    limiter: Limiter | None = None  # RATE_LIMIT_TURNS or MAX_SESSIONS_PER_PRINCIPAL


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_app_settings(request: Request) -> Settings:
    return get_runtime(request).settings


async def get_conversations(request: Request) -> Conversations:
    return get_runtime(request).conversations


async def get_metrics(request: Request) -> Metrics:
    return get_runtime(request).metrics


async def get_principal(request: Request) -> str | None:
    """Who sent the request: None without authentication, else the principal of its key
    (`Authorization: Bearer <key>`, or `X-API-Key: <key>`), or 401 `unauthorized` (with
    `WWW-Authenticate: Bearer`)."""
    keyring = get_runtime(request).keyring
    if keyring is None:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else ""
    # X-API-Key: for paths that drop Authorization, e.g. the Kubernetes API server's service
    # proxy (`kubectl proxy`), which authenticates the caller with it and then strips it.
    key = key or request.headers.get("x-api-key", "").strip()
    principal = keyring.principal(key) if key else None
    if principal is None:
        problem = "invalid API key" if key else "missing API key"
        raise ApiError(
            401,
            "unauthorized",
            f"{problem}: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="chat-history"'},
        )
    return principal


async def get_limiter(request: Request) -> Limiter | None:
    return get_runtime(request).limiter


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ConversationsDep = Annotated[Conversations, Depends(get_conversations)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PrincipalDep = Annotated[str | None, Depends(get_principal)]
LimiterDep = Annotated[Limiter | None, Depends(get_limiter)]
