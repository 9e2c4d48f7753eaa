"""Chat models that fail or stall on demand: the built-in model, except for marked messages."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import ConfigDict, Field

from chat_history_k8s.model import BuiltinChatModel

FAIL = "[fail]"
STALL = "[stall]"
HOLD = "[hold]"


class FlakyModel(BuiltinChatModel):
    """Raises (a provider outage) on a turn containing FAIL; never answers one containing STALL
    (a hung provider: the turn holds its session until the process dies); waits for `release`
    on one containing HOLD (a slow provider, under the test's control)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    release: asyncio.Event = Field(default_factory=asyncio.Event)
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
        return self._generate(messages, stop)
