"""Every langchain-core message type round-trips exactly through a checkpoint and its writes."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base.id import uuid6

from chat_history_k8s.checkpoint import RedisCheckpointSaver

INVALID_CALL: Any = {
    "name": "bad", "args": "{oops", "id": "call2", "error": "bad JSON", "type": "invalid_tool_call",
}  # fmt: skip
USAGE: Any = {
    "input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
    "input_token_details": {"cache_read": 2},
}  # fmt: skip
MESSAGES: list[BaseMessage] = [
    SystemMessage(content="Be brief.", id="s1", additional_kwargs={"cache": True}),
    HumanMessage(
        content=[
            {"type": "text", "text": "What is in this picture? ünïcode ✓"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
        name="ada",
        id="h1",
    ),
    AIMessage(
        content="Let me look.",
        id="a1",
        tool_calls=[
            {"name": "search", "args": {"q": "cats", "n": 2}, "id": "call1", "type": "tool_call"}
        ],
        invalid_tool_calls=[INVALID_CALL],
        usage_metadata=USAGE,
        response_metadata={"model_name": "m-1", "finish_reason": "tool_calls", "logprobs": None},
        additional_kwargs={"refusal": None},
    ),
    ToolMessage(
        content="2 cats", tool_call_id="call1", name="search", artifact={"raw": [1, 2]}, id="t1"
    ),
    ToolMessage(content="boom", tool_call_id="call2", status="error", id="t2"),
    AIMessageChunk(
        content="partial",
        id="c1",
        tool_call_chunks=[
            {"name": "f", "args": '{"a": 1', "id": "call3", "index": 0, "type": "tool_call_chunk"}
        ],
    ),
    ChatMessage(role="critic", content="Meh.", id="m1"),
    FunctionMessage(name="legacy", content="{}", id="f1"),
    AIMessage(content="", id="a2", response_metadata={"created": 1.5}),
]


def checkpoint(messages: list[BaseMessage]) -> Any:
    return {
        "v": 1, "id": str(uuid6(clock_seq=-1)), "ts": "2026-01-01T00:00:00+00:00",
        "channel_values": {"messages": messages}, "channel_versions": {"messages": "1.0"},
        "versions_seen": {}, "updated_channels": None,
    }  # fmt: skip


def assert_identical(restored: list[BaseMessage]) -> None:
    assert restored == MESSAGES
    assert [type(m) for m in restored] == [type(m) for m in MESSAGES]
    assert [m.model_dump() for m in restored] == [m.model_dump() for m in MESSAGES]


async def test_every_message_type_round_trips_async(saver: RedisCheckpointSaver) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "f", "checkpoint_ns": ""}}
    stored = await saver.aput(config, checkpoint(MESSAGES), {}, {"messages": "1.0"})
    await saver.aput_writes(stored, [("messages", MESSAGES)], "task")
    restored = await saver.aget_tuple(stored)
    assert restored is not None and restored.pending_writes is not None
    assert_identical(restored.checkpoint["channel_values"]["messages"])
    assert_identical(restored.pending_writes[0][2])


def test_every_message_type_round_trips_sync(saver: RedisCheckpointSaver) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "f", "checkpoint_ns": ""}}
    stored = saver.put(config, checkpoint(MESSAGES), {}, {"messages": "1.0"})
    saver.put_writes(stored, [("messages", MESSAGES)], "task")
    restored = saver.get_tuple(stored)
    assert restored is not None and restored.pending_writes is not None
    assert_identical(restored.checkpoint["channel_values"]["messages"])
    assert_identical(restored.pending_writes[0][2])
