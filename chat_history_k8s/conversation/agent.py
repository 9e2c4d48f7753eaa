"""The service's LangGraph agent: `create_agent` with the chat model, no tools, a middleware that
gives the model its window and caps the thread, and a checkpointer wrapper that stores a turn
only if the model answered.

What LangGraph writes when the model raises: the run's input is already in the thread's state,
so with the default durability the human message is saved without a reply *before* the model
runs, and with `durability="exit"` it is saved when the run ends in the error (the next turn
then carries an orphan human message; tests/conversation shows both). So a turn runs with
`durability="exit"` (one checkpoint write, at the end: a turn is stored whole or not at all,
also when Redis fails mid-turn or the lease expires) and `CommitGate` drops the writes of a run
whose model has not answered.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import (
    AgentMiddleware,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.config import get_config
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from chat_history_k8s.conversation.base import check_reply
from chat_history_k8s.history.base import whole_tool_groups
from chat_history_k8s.metrics import Metrics

Agent = CompiledStateGraph[Any, Any, Any, Any]
ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]

# The configurable key that carries a turn's `Turn` through the run. LangGraph keeps keys that
# start with "__" out of checkpoint metadata and traces.
TURN_CONFIG_KEY = "__chat_history_turn__"


@dataclass
class Turn:
    """One turn's record, shared by the middleware and the gate through the run's config:
    `answered` once the model replied (until then nothing of the turn may be stored),
    `model_error` if the model raised."""

    history_length: int = 0
    answered: bool = False
    model_error: BaseException | None = None


def turn_of(config: RunnableConfig) -> Turn | None:
    turn = config.get("configurable", {}).get(TURN_CONFIG_KEY)
    return turn if isinstance(turn, Turn) else None


@contextmanager
def _recording(turn: Turn | None) -> Iterator[None]:
    """Record on `turn` how its model call ended: answered, or the error it raised (re-raised)."""
    try:
        yield
    except Exception as exc:
        if turn is not None:
            turn.model_error = exc
        raise
    if turn is not None:
        turn.answered = True


def _check_replies(response: ModelResponse[Any]) -> None:
    # A reply no store can take fails the turn as a model error: the gate then drops its writes.
    for message in response.result:
        check_reply(message)


class TurnMiddleware(AgentMiddleware[Any, Any, Any]):
    """The model sees the last `window_messages` messages (without a leading tool result cut off
    from its call) and the new one (the thread keeps them all), and the thread keeps at most
    `max_messages`: once a reply would exceed it, the
    oldest turn is removed in the same update as the reply. Records `history_length` (messages
    before the turn) and a model failure on the run's `Turn`."""

    def __init__(self, *, window_messages: int, max_messages: int) -> None:
        super().__init__()
        self.window_messages = window_messages
        self.max_messages = max_messages

    def _prepare(self, request: ModelRequest[Any]) -> tuple[ModelRequest[Any], Turn | None]:
        turn = turn_of(get_config())
        *history, new = request.messages  # the last one is this turn's
        if turn is not None:
            turn.history_length = len(history)
        # As the history stores do: a window never starts with a tool result cut off from its call.
        window = history[-self.window_messages :]
        orphans = len(window) - len(whole_tool_groups(list(window)))
        return request.override(messages=[*window[orphans:], new]), turn

    def _finish(self, messages: Sequence[AnyMessage], response: ModelResponse[Any]) -> ModelResult:
        excess = len(messages) + 1 - self.max_messages  # after the reply is added
        if excess <= 0:
            return response
        oldest = messages[: excess + excess % 2]  # whole turns
        update = {"messages": [RemoveMessage(id=m.id) for m in oldest if m.id is not None]}
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResult:
        windowed, turn = self._prepare(request)
        with _recording(turn):
            response = handler(windowed)
            _check_replies(response)
        return self._finish(request.messages, response)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResult:
        windowed, turn = self._prepare(request)
        with _recording(turn):
            response = await handler(windowed)
            _check_replies(response)
        return self._finish(request.messages, response)


class CommitGate(BaseCheckpointSaver[Any]):
    """A checkpointer in front of `saver` (async only, as the service runs its agent): a turn's
    writes go through only once its model answered, so a turn that ends before that stores
    nothing — the model raised, the read before it failed, or the request was cancelled (a
    shutdown) — while LangGraph, with `durability="exit"`, would save the human message then.
    It also times a turn's read (`chat_history_read_seconds`) and write
    (`chat_history_append_seconds`). Calls outside a turn pass through unchanged."""

    def __init__(self, saver: BaseCheckpointSaver[Any], metrics: Metrics, backend: str) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver
        self._read = metrics.history_read.labels(backend)
        self._write = metrics.history_append.labels(backend)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if turn_of(config) is None:
            return await self.saver.aget_tuple(config)
        started = time.perf_counter()
        found = await self.saver.aget_tuple(config)
        self._read.observe(time.perf_counter() - started)
        return found

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self.saver.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        turn = turn_of(config)
        if turn is not None and not turn.answered:
            return config  # the run ends in an error next: nothing of it is stored
        started = time.perf_counter()
        stored = await self.saver.aput(config, checkpoint, metadata, new_versions)
        if turn is not None:
            self._write.observe(time.perf_counter() - started)
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        turn = turn_of(config)
        if turn is not None and not turn.answered:
            return
        await self.saver.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.saver.get_next_version(current, channel)


def build_agent(
    model: BaseChatModel, checkpointer: BaseCheckpointSaver[Any], middleware: TurnMiddleware
) -> Agent:
    """The conversation: `create_agent` as LangChain documents it, no tools."""
    return create_agent(model, tools=[], checkpointer=checkpointer, middleware=[middleware])
