"""The common way, as a peer at the HTTP level: what a user would write instead of this service.

A FastAPI app whose `POST /v1/chat` (same request and response shapes) runs the service's
built-in model under LangChain's `RunnableWithMessageHistory`, its history in langchain-community's
`RedisChatMessageHistory`, with the `get_session_history` factory as LangChain's docs show it:
a new history object (and so a new Redis client) per request. Its defaults: no TTL, no cap, the
whole history read every turn and given to the model. Served exactly like the service:
`uvicorn bench.langchain_app:app` with the same flags (see testsupport/replicas.py), REDIS_URL
from the environment. `RunnableWithMessageHistory` is deprecated (the project bans it, see
pyproject's banned-api) and still what LangChain's docs and most code in the wild use: this peer
exists to measure exactly that.
"""

from __future__ import annotations

import os
import socket
import uuid
import warnings

from fastapi import FastAPI
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory  # noqa: TID251

from chat_history_k8s.api.chat import ChatRequest, ChatResponse  # the service's own models
from chat_history_k8s.model import BuiltinChatModel

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # langchain-community announces its sunset
    from langchain_community.chat_message_histories import RedisChatMessageHistory

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POD_NAME = os.environ.get("POD_NAME", socket.gethostname())

prompt = ChatPromptTemplate.from_messages(
    [MessagesPlaceholder(variable_name="history"), ("human", "{input}")]
)


def get_session_history(session_id: str) -> BaseChatMessageHistory:
    return RedisChatMessageHistory(session_id, url=REDIS_URL)


chain = RunnableWithMessageHistory(
    prompt | BuiltinChatModel(),
    get_session_history,
    input_messages_key="input",
    history_messages_key="history",
)

app = FastAPI(title="langchain-community peer")


@app.post("/v1/chat")
async def chat(body: ChatRequest) -> ChatResponse:
    session_id = body.session_id or str(uuid.uuid4())
    reply = await chain.ainvoke(
        {"input": body.message}, config={"configurable": {"session_id": session_id}}
    )
    return ChatResponse(
        session_id=session_id,
        reply=reply.text,
        served_by=POD_NAME,
        backend="redis (langchain-community)",
        history_length=-1,  # it does not say; the benchmark reads the lists afterwards
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
