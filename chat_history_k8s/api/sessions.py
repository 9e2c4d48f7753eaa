"""A session's transcript: read it, delete it."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from chat_history_k8s.api.deps import ConversationsDep, LimiterDep, PrincipalDep, SettingsDep
from chat_history_k8s.api.routing import ServiceRoute
from chat_history_k8s.api.session_ids import checked_session_id
from chat_history_k8s.auth import scoped
from chat_history_k8s.errors import ApiError

router = APIRouter(tags=["sessions"], route_class=ServiceRoute)


class MessageOut(BaseModel):
    type: Literal["human", "ai", "system", "tool", "function", "chat"]
    content: str


class TranscriptOut(BaseModel):
    session_id: str
    served_by: str
    backend: str
    messages: list[MessageOut]


@router.get("/v1/sessions/{session_id}/messages")
async def get_messages(
    session_id: str,
    settings: SettingsDep,
    conversations: ConversationsDep,
    principal: PrincipalDep,
) -> TranscriptOut:
    # Another principal's session is stored under another key: "not found", never its content.
    messages = await conversations.transcript(scoped(principal, checked_session_id(session_id)))
    if not messages:
        raise ApiError(404, "session_not_found", f"no history for session {session_id!r} here")
    return TranscriptOut(
        session_id=session_id,
        served_by=settings.pod_name,
        backend=conversations.backend,
        messages=[MessageOut(type=m.type, content=m.text) for m in messages],
    )


@router.delete("/v1/sessions/{session_id}", status_code=204)
async def delete_session(
    session_id: str,
    conversations: ConversationsDep,
    principal: PrincipalDep,
    limiter: LimiterDep,
) -> Response:
    await conversations.delete(scoped(principal, checked_session_id(session_id)))
    if limiter is not None and principal is not None:
        await limiter.forget(principal, session_id)  # it no longer counts against the quota
    return Response(status_code=204)
