"""The built-in model: deterministic and visibly history-aware."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from chat_history_k8s.main import create_app
from chat_history_k8s.model import BuiltinChatModel
from tests.conftest import make_settings


async def test_it_recalls_the_last_name_given_and_counts_what_it_sees() -> None:
    model = BuiltinChatModel()
    history = [
        HumanMessage(content="Hi! My name is Grace."),
        AIMessage(content="Nice to meet you, Grace!"),
        HumanMessage(content="Actually my name is Ada"),
        AIMessage(content="ok"),
    ]
    reply = await model.ainvoke([*history, HumanMessage(content="What's my name?")])
    assert reply.text == "Your name is Ada. I can see 4 earlier messages."


async def test_without_history_it_says_it_does_not_know() -> None:
    reply = await BuiltinChatModel().ainvoke([HumanMessage(content="who am I?")])
    assert reply.text.startswith("I don't know your name")
    assert reply.text.endswith("I can see 0 earlier messages.")


def test_it_is_deterministic_and_names_in_assistant_turns_do_not_count() -> None:
    model = BuiltinChatModel()
    messages = [AIMessage(content="my name is Bot"), HumanMessage(content="what is my name")]
    assert model.invoke(messages).text == model.invoke(messages).text
    assert model.invoke(messages).text.startswith("I don't know your name")
    hello = model.invoke([HumanMessage(content="hello")]).text
    assert hello == 'You said: "hello". I can see 0 earlier messages.'


async def test_a_real_provider_without_its_extra_fails_at_startup_with_the_fix() -> None:
    app = create_app(make_settings("memory", chat_model="openai", openai_model="gpt-4o-mini"))
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[openai\]'"):
        async with app.router.lifespan_context(app):
            pass


def test_without_the_name_in_view_it_says_what_it_can_see_not_that_it_was_never_told() -> None:
    model = BuiltinChatModel()
    window = [HumanMessage(content=f"fact {i}") for i in range(4)]
    reply = model.reply_to([*window, HumanMessage(content="What is my name?")])
    assert reply == (
        "I don't know your name: it is not in the messages I was shown. "
        "I can see 4 earlier messages."
    )
