"""The service's agent: what LangGraph stores when the model fails (and why the CommitGate
exists), the window and the cap, and what a turn costs in Redis round trips."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import redis
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Durability

from chat_history_k8s.conversation.agent import TURN_CONFIG_KEY, CommitGate, Turn, TurnMiddleware
from chat_history_k8s.metrics import Metrics
from tests.api.models import FAIL, FlakyModel
from tests.conftest import app_client, commands_per_turn, commandstats, make_settings


def round_trip_counts(metrics: str) -> Counter[str]:
    found = re.findall(r'chat_history_redis_round_trips_total\{op="(\w+)"\} ([\d.]+)', metrics)
    return Counter({op: int(float(value)) for op, value in found})


def config(thread_id: str, turn: Turn | None = None) -> RunnableConfig:
    configurable: dict[str, object] = {"thread_id": thread_id}
    if turn is not None:
        configurable[TURN_CONFIG_KEY] = turn
    return {"configurable": configurable}


@pytest.mark.parametrize("durability", ["async", "exit"])
async def test_without_the_gate_a_failed_model_call_leaves_an_orphan_human_message(
    durability: Durability,
) -> None:
    """The control: LangGraph saves the run's input even when the model raises."""
    agent = create_agent(FlakyModel(), tools=[], checkpointer=InMemorySaver())
    await agent.ainvoke({"messages": [HumanMessage("hello")]}, config("t"), durability=durability)
    with pytest.raises(RuntimeError, match="provider is down"):
        await agent.ainvoke({"messages": [HumanMessage(FAIL)]}, config("t"), durability=durability)
    state = await agent.aget_state(config("t"))
    assert [m.type for m in state.values["messages"]] == ["human", "ai", "human"]


async def test_with_the_gate_a_failed_model_call_stores_nothing() -> None:
    saver = InMemorySaver()
    gate = CommitGate(saver, Metrics(), "memory")
    middleware = TurnMiddleware(window_messages=20, max_messages=1000)
    agent = create_agent(FlakyModel(), tools=[], checkpointer=gate, middleware=[middleware])
    await agent.ainvoke(
        {"messages": [HumanMessage("hello")]}, config("t", Turn()), durability="exit"
    )
    before = await saver.aget_tuple(config("t"))
    turn = Turn()
    with pytest.raises(RuntimeError, match="provider is down"):
        await agent.ainvoke(
            {"messages": [HumanMessage(FAIL)]}, config("t", turn), durability="exit"
        )
    assert isinstance(turn.model_error, RuntimeError)
    after = await saver.aget_tuple(config("t"))
    assert before is not None and after is not None
    assert after.checkpoint["id"] == before.checkpoint["id"] and after.pending_writes == []
    # Nothing of the turn marker reaches what is stored.
    assert TURN_CONFIG_KEY not in str(after.metadata) and TURN_CONFIG_KEY not in str(after.config)


async def test_the_model_sees_the_window_and_the_thread_keeps_up_to_the_cap() -> None:
    saver = InMemorySaver()
    middleware = TurnMiddleware(window_messages=2, max_messages=6)
    agent = create_agent(FlakyModel(), tools=[], checkpointer=saver, middleware=[middleware])
    lengths = []
    for i in range(5):
        turn = Turn()
        state = await agent.ainvoke(
            {"messages": [HumanMessage(f"m{i}")]}, config("t", turn), durability="exit"
        )
        lengths.append(turn.history_length)
        seen = min(2 * i, 2)
        assert state["messages"][-1].text.endswith(f"I can see {seen} earlier messages.")
    assert lengths == [0, 2, 4, 6, 6]
    assert [m.text for m in state["messages"][::2]] == ["m2", "m3", "m4"]


@pytest.mark.parametrize("prior_turns", [1, 20, 200])
async def test_a_checkpointer_turn_is_four_round_trips_whatever_the_thread_length(
    redis_url: str, count_round_trips: list[int], prior_turns: int
) -> None:
    """Lease, read the head, write the turn's one checkpoint, release: 4 EVALSHAs."""
    settings = make_settings("redis", redis_url, history_api="checkpointer")
    server = redis.Redis.from_url(redis_url)
    async with app_client(settings) as client:
        for i in range(prior_turns):
            r = await client.post("/v1/chat", json={"session_id": "long", "message": f"m{i}"})
            assert r.status_code == 200
        counted = round_trip_counts((await client.get("/metrics")).text)
        count_round_trips[0] = 0
        before = commandstats(server)
        for _ in range(5):
            r = await client.post("/v1/chat", json={"session_id": "long", "message": "again"})
            assert r.status_code == 200
        after = commandstats(server)
        counted = round_trip_counts((await client.get("/metrics")).text) - counted
    assert count_round_trips[0] == 20
    per_turn = commands_per_turn(before, after, 5)
    assert per_turn["evalsha"] == 4  # the rest is what the scripts run inside Redis
    assert not {"eval", "scan", "keys"} & set(per_turn)
    assert r.json()["history_length"] == min(2 * (prior_turns + 4), 1000)
    assert counted == Counter({"acquire": 5, "get": 5, "put": 5, "release": 5})  # /metrics agrees


async def test_the_window_never_starts_with_a_tool_result_cut_off_from_its_call() -> None:
    saver = InMemorySaver()
    middleware = TurnMiddleware(window_messages=2, max_messages=1000)
    agent = create_agent(FlakyModel(), tools=[], checkpointer=saver, middleware=[middleware])
    call = {"name": "lookup", "args": {"q": "tea"}, "id": "call-1"}
    await agent.aupdate_state(
        config("t"),
        {
            "messages": [
                HumanMessage("what tea?"),
                AIMessage("", tool_calls=[call]),
                ToolMessage("green", tool_call_id="call-1"),
                AIMessage("Green tea."),
            ]
        },
    )
    turn = Turn()
    state = await agent.ainvoke({"messages": [HumanMessage("thanks")]}, config("t", turn))
    assert turn.history_length == 4
    # The last 2 messages would start with the tool result: the model is shown 1 of them.
    assert state["messages"][-1].text.endswith("I can see 1 earlier message.")
