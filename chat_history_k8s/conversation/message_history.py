"""`HISTORY_API=message-history`: load the window, call the model, append the turn."""

from __future__ import annotations

import time

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage

from chat_history_k8s.conversation.base import (
    Conversations,
    ModelFailed,
    TurnResult,
    check_reply,
)
from chat_history_k8s.history import ChatHistory, HistoryStore
from chat_history_k8s.history.base import StoreMetric
from chat_history_k8s.history.redis import RedisChatHistory
from chat_history_k8s.limits.base import Admission, Gate
from chat_history_k8s.metrics import Metrics


class MessageHistoryConversations(Conversations):
    """Sessions kept by a `HistoryStore` (`BaseChatMessageHistory` backends).

    A turn is one window read and one atomic append (2 Redis round trips): a failed model call
    happens before the append, so it stores nothing. Concurrent turns on a session never lose a
    turn and never interleave one (the append is atomic), but they are not serialized: two of
    them may both be answered from the same window. The limits' admission rides along the
    window read (one pipeline) when both are in Redis: still 2 round trips.
    """

    api = "message-history"

    def __init__(
        self, store: HistoryStore, model: BaseChatModel, window_messages: int, metrics: Metrics
    ) -> None:
        self.store = store
        self.backend = store.backend
        self._model = model
        self._window = window_messages
        self._metrics = metrics
        self.redis_client = getattr(store, "client", None)

    async def turn(self, session_id: str, text: str, gate: Gate | None = None) -> TurnResult:
        history = self.store.history(session_id)
        started = time.perf_counter()
        window, admission = await self._read(history, gate)
        self._metrics.history_read.labels(self.backend).observe(time.perf_counter() - started)
        try:
            return await self._answer(history, window, text)
        except Exception:
            if gate is not None and admission is not None:
                await gate.release(admission)
            raise

    async def _read(
        self, history: ChatHistory, gate: Gate | None
    ) -> tuple[list[BaseMessage], Admission | None]:
        """The window, after the gate (if any) admitted the turn."""
        if gate is None:
            return await history.aget_window(self._window), None
        command = gate.command()
        if command is not None and isinstance(history, RedisChatHistory):
            window, reply = await history.aget_window_along(self._window, command)
            return window, gate.admitted(reply)
        admission = await gate.admit()
        try:
            return await history.aget_window(self._window), admission
        except Exception:
            await gate.release(admission)
            raise

    async def _answer(
        self, history: ChatHistory, window: list[BaseMessage], text: str
    ) -> TurnResult:
        human = HumanMessage(content=text)
        try:
            ai = await self._model.ainvoke([*window, human])
            check_reply(ai)
        except (
            Exception
        ) as exc:  # any provider failure, or a reply no store can take: store nothing
            raise ModelFailed(exc) from exc

        started = time.perf_counter()
        before = await history.aappend_turn([human, ai])
        self._metrics.history_append.labels(self.backend).observe(time.perf_counter() - started)
        return TurnResult(reply=ai.text, history_length=before)

    async def transcript(self, session_id: str) -> list[BaseMessage]:
        return await self.store.history(session_id).aget_messages()

    async def delete(self, session_id: str) -> None:
        await self.store.history(session_id).aclear()

    async def ping(self) -> None:
        await self.store.ping()

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.aclose()

    def size_metrics(self) -> list[StoreMetric]:
        return self.store.size_metrics()
