"""The framework's ceiling: a bare FastAPI app with the same request and response shapes as
`POST /v1/chat`, touching no store and no model. Served exactly like the service:
`uvicorn bench.bare_app:app` with the same flags (see testsupport/replicas.py)."""

from __future__ import annotations

import uuid

from fastapi import FastAPI

from chat_history_k8s.api.chat import ChatRequest, ChatResponse  # the service's own models

app = FastAPI(title="bare")


@app.post("/v1/chat")
async def chat(body: ChatRequest) -> ChatResponse:
    return ChatResponse(
        session_id=body.session_id or str(uuid.uuid4()),
        reply=f'You said: "{body.message[:200]}". I can see 0 earlier messages.',
        served_by="bare",
        backend="none",
        history_length=0,
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
