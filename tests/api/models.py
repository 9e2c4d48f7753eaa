"""Chat models that fail or stall on demand: the built-in model, except for marked messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

from chat_history_k8s.model import BuiltinChatModel

FAIL = "[fail]"
STALL = "[stall]"
HOLD = "[hold]"
BAD_REPLY = "[bad-reply]"
AFTER = "[after]"


class FlakyModel(BuiltinChatModel):
    """Raises (a provider outage) on a turn containing FAIL; never answers one containing STALL
    (a hung provider: the turn holds its session until the process dies); waits for `release`
    on one containing HOLD (a slow provider, under the test's control); answers text with a
    lone surrogate to one containing BAD_REPLY (a provider gone wrong); calls `after_answer`
    once it has answered one containing AFTER (a failure injected after the model ran)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    release: asyncio.Event = Field(default_factory=asyncio.Event)
    after_answer: Callable[[], None] | None = None
    calls: int = 0

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        turn = messages[-1].text
        if FAIL in turn:
            raise RuntimeError("the provider is down")
        if STALL in turn:
            await asyncio.Event().wait()
        if HOLD in turn:
            await self.release.wait()
        if BAD_REPLY in turn:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="bad \ud800"))])
        answer = self._generate(messages, stop)
        if AFTER in turn and self.after_answer is not None:
            self.after_answer()
        return answer
