"""POST /v1/chat: load the window, call the model, append the turn."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import APIRouter
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, ConfigDict, StrictStr

from service.api.deps import MetricsDep, ModelDep, SettingsDep, StoreDep
from service.api.session_ids import checked_session_id
from service.errors import ApiError

logger = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])


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
    body: ChatRequest, settings: SettingsDep, store: StoreDep, model: ModelDep, metrics: MetricsDep
) -> ChatResponse:
    # Validate everything before touching the store: a rejected request stores nothing.
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

    history = store.history(session_id)
    started = time.perf_counter()
    window = await history.aget_window(settings.history_window_messages)
    metrics.history_read.labels(store.backend).observe(time.perf_counter() - started)

    human = HumanMessage(content=body.message)
    try:
        ai = await model.ainvoke([*window, human])
    except Exception as exc:  # any provider failure: answer 502, store nothing
        logger.warning("chat model failed: %s", type(exc).__name__)
        raise ApiError(502, "model_error", f"the chat model failed: {type(exc).__name__}") from exc

    started = time.perf_counter()
    before = await history.aappend_turn([human, ai])
    metrics.history_append.labels(store.backend).observe(time.perf_counter() - started)
    metrics.turns.labels(store.backend).inc()
    return ChatResponse(
        session_id=session_id,
        reply=ai.text,
        served_by=settings.pod_name,
        backend=store.backend,
        history_length=before,
    )
