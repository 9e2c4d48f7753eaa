"""POST /v1/chat: one turn of a session, whichever memory API keeps it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StrictStr

from chat_history_k8s.api.deps import (
    ConversationsDep,
    LimiterDep,
    MetricsDep,
    PrincipalDep,
    SettingsDep,
)
from chat_history_k8s.api.routing import ServiceRoute
from chat_history_k8s.api.session_ids import checked_session_id
from chat_history_k8s.auth import scoped
from chat_history_k8s.errors import ApiError
from chat_history_k8s.limits import Gate

router = APIRouter(tags=["chat"], route_class=ServiceRoute)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: StrictStr | None = None
    message: StrictStr


class ChatResponse(BaseModel):
    session_id: str
    reply: str
    served_by: str
    backend: str
    history_length: int


@router.post("/v1/chat")
async def chat(
    body: ChatRequest,
    settings: SettingsDep,
    conversations: ConversationsDep,
    metrics: MetricsDep,
    principal: PrincipalDep,
    limiter: LimiterDep,
) -> ChatResponse:
    # Validate everything before touching the store: a rejected request stores nothing. The
    # body parser (api/routing.py) already refused invalid Unicode, escaped or not.
    if body.session_id is None:
        session_id = str(uuid.uuid4())
    else:
        session_id = checked_session_id(body.session_id)
    if not body.message.strip():
        raise ApiError(422, "invalid_request", "message must not be empty")
    if len(body.message) > settings.max_message_chars:
        raise ApiError(
            413,
            "message_too_large",
            f"message has {len(body.message)} characters; limit {settings.max_message_chars}",
        )

    # The store sees the session under its owner's name: another principal's lookup of the same
    # id finds nothing (auth/keys.py, scoped).
    gate = Gate(limiter, principal, session_id) if limiter and principal else None
    result = await conversations.turn(scoped(principal, session_id), body.message, gate)
    metrics.turns.labels(conversations.backend).inc()
    return ChatResponse(
        session_id=session_id,
        reply=result.reply,
        served_by=settings.pod_name,
        backend=conversations.backend,
        history_length=result.history_length,
    )
