"""The contract of a conversation store: what the chat and session routes need, whichever
LangChain memory API (`HISTORY_API`) and backend (`HISTORY_BACKEND`) keep the conversation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import orjson
import redis.asyncio as aredis
from langchain_core.messages import BaseMessage, message_to_dict

from chat_history_k8s.history.base import StoreMetric
from chat_history_k8s.limits.base import Gate


class InvalidReply(ValueError):
    """The model answered something no store and no HTTP response can carry: text that is not
    valid Unicode (a lone surrogate), anywhere in the message (content, tool calls, metadata)."""


class ModelFailed(Exception):
    """The chat model failed; the turn stored nothing. The API answers 502 `model_error`."""

    def __init__(self, cause: BaseException) -> None:
        if isinstance(cause, InvalidReply):
            super().__init__("the chat model answered text that is not valid Unicode")
        else:
            super().__init__(f"the chat model failed: {type(cause).__name__}")


def check_reply(message: BaseMessage) -> None:
    """Raise `InvalidReply` unless `message` encodes as JSON in UTF-8 as a store writes it.
    Checked before anything of the turn is stored: a reply that could not be stored or sent
    must fail the turn (502) rather than be stored and break every later read of the session."""
    try:
        orjson.dumps(message_to_dict(message), option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise InvalidReply(f"the model's reply cannot be stored: {exc}") from exc


@dataclass(frozen=True)
class TurnResult:
    """What a turn answers: the model's reply, and how many messages the session held before."""

    reply: str
    history_length: int


class Conversations(ABC):
    """Sessions (`session_id` = a LangGraph `thread_id`) and their turns, over one store.

    - `turn(session_id, text, gate)`: the model sees the last `HISTORY_WINDOW_MESSAGES`
      messages and the new one; the turn (human + AI) is stored whole or not at all: on
      `ModelFailed` or `HistoryUnavailable` the session is unchanged. Concurrent turns on one
      session never lose a turn. With a `gate`, the turn is first admitted by the limits
      (`RateLimited`: nothing read or stored), in the turn's first round trip when it can be,
      and a turn that fails gives back the session slot it took.
    - `transcript(session_id)`: every stored message, oldest first; `[]` for an unknown session.
    - `delete(session_id)`: forget the session; idempotent.
    - `ping()`: return when the store answers, else raise `HistoryUnavailable` (readiness).

    Lifecycle: `start()` once the event loop runs, `aclose()` when the app stops. Constructors
    do no I/O. `size_metrics()` is read by `/metrics` on every scrape: cheap, no I/O.
    """

    api: str
    backend: str
    # The store's Redis client, if it has one (the limits share it).
    redis_client: aredis.Redis | aredis.RedisCluster | None = None

    @abstractmethod
    async def turn(self, session_id: str, text: str, gate: Gate | None = None) -> TurnResult: ...

    @abstractmethod
    async def transcript(self, session_id: str) -> list[BaseMessage]: ...

    @abstractmethod
    async def delete(self, session_id: str) -> None: ...

    @abstractmethod
    async def ping(self) -> None: ...

    async def start(self) -> None:  # noqa: B027 - a no-op is the right default
        """Begin warm-up or background upkeep; never fails because the store is unreachable."""

    async def aclose(self) -> None:  # noqa: B027 - a no-op is the right default
        """Release connections and stop upkeep; unusable afterwards."""

    def size_metrics(self) -> list[StoreMetric]:
        return []
