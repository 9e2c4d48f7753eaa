"""`HISTORY_API=checkpointer`: the conversation is a LangGraph agent; a session is its thread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from chat_history_k8s.checkpoint import ThreadLease
from chat_history_k8s.conversation.agent import (
    TURN_CONFIG_KEY,
    CommitGate,
    Turn,
    TurnMiddleware,
    build_agent,
)
from chat_history_k8s.conversation.base import Conversations, ModelFailed, TurnResult
from chat_history_k8s.history.base import StoreMetric
from chat_history_k8s.history.redis_pool import WarmedPool
from chat_history_k8s.limits.base import Gate
from chat_history_k8s.metrics import Metrics


class ThreadSerializer(Protocol):
    """Hands out one turn at a time per thread: `RedisCheckpointSaver` (a fenced lease, across
    replicas) or `LocalThreadLocks` (in-process). Raises `ThreadBusy` after its wait."""

    def alease(
        self, thread_id: str, *, wait_seconds: float | None = None
    ) -> AbstractAsyncContextManager[ThreadLease]: ...


def _thread(session_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": session_id}}


class CheckpointerConversations(Conversations):
    """Sessions kept by a LangGraph checkpointer under `create_agent`.

    A turn holds its thread (`serializer.alease`) for the whole run, so concurrent turns on a
    thread run one after the other and each sees every turn before it; with the Redis saver
    every write of the turn carries the lease's fence, so a turn that outlived its lease stores
    nothing. The run uses `durability="exit"`: one checkpoint write at the end, dropped by the
    `CommitGate` unless the model answered (agent.py says why).

    `pool` is the Redis client's lifecycle (warm-up, readiness), if there is one; `closers` run
    in order when the app stops. `locked_deletes`: a saver without fencing (`InMemorySaver`)
    deletes under the thread's lock, or a running turn would write the thread back; the Redis
    saver's delete fences out the running turn itself, so it needs no lease (a crashed holder
    cannot delay it).
    """

    api = "checkpointer"

    def __init__(
        self,
        *,
        backend: str,
        saver: BaseCheckpointSaver[Any],
        serializer: ThreadSerializer,
        model: BaseChatModel,
        window_messages: int,
        max_messages: int,
        metrics: Metrics,
        locked_deletes: bool,
        pool: WarmedPool | None = None,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        size_metrics: Callable[[], list[StoreMetric]] | None = None,
    ) -> None:
        self.backend = backend
        self.saver = saver
        self._serializer = serializer
        self._locked_deletes = locked_deletes
        self._pool = pool
        self._closers = closers
        self._size_metrics = size_metrics
        self.redis_client = pool.client if pool is not None else None
        middleware = TurnMiddleware(window_messages=window_messages, max_messages=max_messages)
        self.agent = build_agent(model, CommitGate(saver, metrics, backend), middleware)

    async def turn(self, session_id: str, text: str, gate: Gate | None = None) -> TurnResult:
        # The admission is a round trip of its own here, before the lease: sent along the lease's
        # first attempt it would save that round trip, but a refused turn would then have taken
        # the lease, and on a new thread the lease leaves the thread's fence counter behind (it
        # lives for the history TTL): a flood of refused new sessions would fill the store.
        admission = await gate.admit() if gate is not None else None
        try:
            return await self._turn(session_id, text)
        except Exception:
            if gate is not None and admission is not None:
                await gate.release(admission)
            raise

    async def _turn(self, session_id: str, text: str) -> TurnResult:
        turn = Turn()
        async with self._serializer.alease(session_id) as lease:
            config = lease.config({"configurable": {TURN_CONFIG_KEY: turn}})
            try:
                state = await self.agent.ainvoke(
                    {"messages": [HumanMessage(content=text)]}, config, durability="exit"
                )
            except Exception as exc:
                if turn.model_error is not None:
                    raise ModelFailed(turn.model_error) from exc
                raise
        reply: BaseMessage = state["messages"][-1]
        return TurnResult(reply=reply.text, history_length=turn.history_length)

    async def transcript(self, session_id: str) -> list[BaseMessage]:
        snapshot = await self.agent.aget_state(_thread(session_id))
        return list(snapshot.values.get("messages", []))

    async def delete(self, session_id: str) -> None:
        if not self._locked_deletes:
            await self.saver.adelete_thread(session_id)
            return
        async with self._serializer.alease(session_id):
            await self.saver.adelete_thread(session_id)

    async def ping(self) -> None:
        if self._pool is not None:
            await self._pool.ping()

    async def start(self) -> None:
        if self._pool is not None:
            await self._pool.start()

    async def aclose(self) -> None:
        for close in self._closers:
            await close()

    def size_metrics(self) -> list[StoreMetric]:
        return self._size_metrics() if self._size_metrics is not None else []
