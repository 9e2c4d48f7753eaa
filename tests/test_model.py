"""The built-in model: deterministic and visibly history-aware."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from service.model import BuiltinChatModel


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
