"""Chat models: a deterministic offline model by default, any LangChain chat model optionally."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from chat_history_k8s.config import Settings

_NAME_TOLD = re.compile(r"\bmy name is ([A-Za-z][A-Za-z'-]{0,63})", re.IGNORECASE)
_NAME_ASKED = re.compile(r"\b(what(?:'s| is) my name|who am i)\b", re.IGNORECASE)


def _told_name(messages: Sequence[BaseMessage]) -> str | None:
    """The last name the user gave ("my name is Ada") in these messages, if any."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and (match := _NAME_TOLD.search(message.text)):
            return match.group(1)
    return None


class BuiltinChatModel(BaseChatModel):
    """A deterministic, history-aware model that needs no network and no API key.

    It exists so that a person can *see* memory work or fail: it recalls a name given earlier
    ("my name is Ada" ... "what is my name?") and says how many earlier messages it was shown.
    The last message is the user's turn; everything before it is history.
    """

    @property
    def _llm_type(self) -> str:
        return "chat-history-builtin"

    def reply_to(self, messages: Sequence[BaseMessage]) -> str:
        history, turn = messages[:-1], messages[-1].text if messages else ""
        earlier = len(history)
        seen = f"I can see {earlier} earlier message{'s' if earlier != 1 else ''}."
        if match := _NAME_TOLD.search(turn):
            return f"Nice to meet you, {match.group(1)}! {seen}"
        if _NAME_ASKED.search(turn):
            name = _told_name(history)
            if name is None:
                # Say what it sees, not what the conversation holds: the store may keep more
                # than the window it passes to the model (HISTORY_WINDOW_MESSAGES).
                return f"I don't know your name: it is not in the messages I was shown. {seen}"
            return f"Your name is {name}. {seen}"
        return f'You said: "{turn[:200]}". {seen}'

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = AIMessage(content=self.reply_to(messages))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Native async: no thread-pool hop for a computation that takes microseconds.
        return self._generate(messages, stop)


def build_model(settings: Settings) -> BaseChatModel:
    """The chat model chosen by `CHAT_MODEL`."""
    if settings.chat_model == "builtin":
        return BuiltinChatModel()
    try:
        # The ignore: an optional extra, absent from the default install that mypy checks.
        from langchain_openai import ChatOpenAI  # type: ignore[import-not-found,unused-ignore]  # see above
    except ImportError as exc:  # an optional extra: fail at startup, loudly
        raise RuntimeError(
            "CHAT_MODEL=openai needs the optional extra: pip install -e '.[openai]' in a checkout"
            " of chat-history-k8s, or pip install langchain-openai"
        ) from exc
    model: BaseChatModel = ChatOpenAI(
        model=settings.openai_model,
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        timeout=settings.openai_timeout_seconds,
        max_retries=1,
    )
    return model
