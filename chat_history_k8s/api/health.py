"""Probes, metrics and build info."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat_history_k8s import __version__
from chat_history_k8s.api.deps import ConversationsDep, MetricsDep, SettingsDep
from chat_history_k8s.api.routing import ServiceRoute
from chat_history_k8s.api.session_ids import MAX_SESSION_ID_LENGTH
from chat_history_k8s.history import HistoryUnavailable

logger = logging.getLogger(__name__)
router = APIRouter(tags=["ops"], route_class=ServiceRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Touches nothing, so a store outage never restarts pods."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(settings: SettingsDep, conversations: ConversationsDep) -> JSONResponse:
    """Readiness: the history store answers, so this replica can serve a turn."""
    # Bound the whole check, retries included, so it answers before the kubelet's probe times
    # out (1.5 s with the defaults; the chart's probe waits longer).
    budget = settings.redis_connect_timeout_seconds + settings.redis_socket_timeout_seconds
    try:
        await asyncio.wait_for(conversations.ping(), timeout=budget)
    except (HistoryUnavailable, TimeoutError) as exc:
        # The answer may reach anyone who can reach the pod: name no internal address.
        public = exc.public if isinstance(exc, HistoryUnavailable) else ""
        detail = public or f"no answer within {budget:.1f}s"
        logger.debug("not ready: %s", exc or detail)  # the detail, address included
        return JSONResponse(
            status_code=503,
            content={
                "error": {"code": "history_unavailable", "message": detail},
                "checks": {
                    "history": {"ok": False, "backend": conversations.backend, "error": detail}
                },
            },
        )
    return JSONResponse(
        {"status": "ready", "checks": {"history": {"ok": True, "backend": conversations.backend}}}
    )


@router.get("/metrics")
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/info")
async def info(settings: SettingsDep, conversations: ConversationsDep) -> dict[str, object]:
    return {
        "served_by": settings.pod_name,
        "backend": conversations.backend,
        "history_api": conversations.api,
        "version": __version__,
        "model": settings.chat_model,
        "max_message_chars": settings.max_message_chars,
        "max_session_id_length": MAX_SESSION_ID_LENGTH,
        "history_window_messages": settings.history_window_messages,
        "history_max_messages": settings.history_max_messages,
        "history_ttl_seconds": settings.history_ttl_seconds,
        "memory_max_sessions": settings.memory_max_sessions,
        "memory_max_messages": settings.memory_max_messages,
        "checkpoint_max_checkpoints": settings.checkpoint_max_checkpoints,
        "checkpoint_lease_seconds": settings.checkpoint_lease_seconds,
        "checkpoint_lease_wait_seconds": settings.checkpoint_lease_wait_seconds,
        # What a client must send and may expect (never which keys exist).
        "auth": "api-keys" if settings.auth_enabled else "off",
        "rate_limit_turns": settings.rate_limit_turns,
        "rate_limit_window_seconds": settings.rate_limit_window_seconds,
        "max_sessions_per_principal": settings.max_sessions_per_principal,
    }
