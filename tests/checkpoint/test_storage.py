"""Bounded storage: K checkpoints per thread and namespace, and only what they reference; a
thread's bytes grow linearly with its messages (InMemorySaver's quadratically, for the record)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver

from chat_history_k8s.checkpoint import RedisCheckpointSaver
from chat_history_k8s.checkpoint.layout import ThreadKeys
from tests.checkpoint.conftest import (
    SaverFactory,
    make_agent,
    say,
    stored_bytes,
    thread,
    user_text,
)
from tests.conftest import FIGURES
from testsupport.inmemory_saver import inmemory_bytes


async def put(
    saver: RedisCheckpointSaver,
    config: RunnableConfig,
    values: dict[str, Any],
    versions: ChannelVersions,
    new: ChannelVersions,
) -> RunnableConfig:
    checkpoint: Any = {
        "v": 1, "id": str(uuid6(clock_seq=-1)), "ts": "2026-01-01T00:00:00+00:00",
        "channel_values": values, "channel_versions": versions, "versions_seen": {},
        "updated_channels": None,
    }  # fmt: skip
    return await saver.aput(config, checkpoint, {"source": "loop", "step": 0}, new)


async def test_a_put_keeps_the_newest_k_checkpoints_and_only_what_they_reference(
    new_saver: SaverFactory, server: redis.Redis
) -> None:
    saver = new_saver(max_checkpoints=3)
    config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    # "big" is written once and referenced by every checkpoint; "turn" changes every time.
    versions: ChannelVersions = {"big": 1, "turn": 1}
    stored = await put(saver, config, {"big": "B", "turn": 0}, versions, versions)
    ids = [stored["configurable"]["checkpoint_id"]]
    for i in range(1, 6):
        await saver.aput_writes(stored, [("turn", i), ("__error__", "x")], f"task{i}")
        values: dict[str, Any] = {"big": "B", "turn": i}
        versions = {"big": 1, "turn": i + 1}
        stored = await put(saver, stored, values, versions, {"turn": i + 1})
        ids.append(stored["configurable"]["checkpoint_id"])
    await saver.aput_writes(stored, [("turn", 9)], "task-last")

    listed = [t async for t in saver.alist(config)]
    assert [t.checkpoint["id"] for t in listed] == ids[::-1][:3]
    assert [t.checkpoint["channel_values"] for t in listed] == [
        {"big": "B", "turn": i} for i in (5, 4, 3)
    ]
    assert [len(t.pending_writes or []) for t in listed] == [1, 2, 2]
    keys = ThreadKeys("chat-history:ckpt:", "t")
    assert server.hlen(keys.key("cp")) == server.zcard(keys.key("idx")) == 3
    assert server.hlen(keys.key("blobs")) == 4  # big@1 + turn@4..6
    assert server.hlen(keys.key("writes")) == server.zcard(keys.key("widx")) == 5
    assert await saver.aget_tuple(
        {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": ids[2]}}
    ) is None  # fmt: skip
    # A write filed under a checkpoint retention dropped is not stored (it could never be read).
    old: RunnableConfig = {"configurable": {**config["configurable"], "checkpoint_id": ids[0]}}
    await saver.aput_writes(old, [("turn", 99)], "late")
    assert server.hlen(keys.key("writes")) == 5


async def test_namespaces_are_bounded_each_and_unbounded_keeps_everything(
    new_saver: SaverFactory,
) -> None:
    bounded = new_saver(max_checkpoints=2)
    unbounded = new_saver(max_checkpoints=0, key_prefix="all:")
    for saver in (bounded, unbounded):
        for ns in ("", "child:1"):
            config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ns}}
            for i in range(5):
                config = await put(saver, config, {"c": i}, {"c": i + 1}, {"c": i + 1})
    for ns in ("", "child:1"):
        assert len([t async for t in bounded.alist(ns_config(ns))]) == 2
    assert len([t async for t in unbounded.alist(thread("t"))]) == 10


def ns_config(ns: str) -> RunnableConfig:
    return {"configurable": {"thread_id": "t", "checkpoint_ns": ns}}


async def test_a_threads_storage_grows_linearly_with_its_messages(
    saver: RedisCheckpointSaver, server: redis.Redis, record_property: Callable[[str, object], None]
) -> None:
    redis_agent, memory = make_agent(saver), InMemorySaver()
    memory_agent = make_agent(memory)
    measured: dict[int, tuple[int, int]] = {}
    for i in range(1, 201):
        await say(redis_agent, thread("long"), user_text(i))
        await say(memory_agent, thread("long"), user_text(i))
        if i in (50, 100, 200):
            measured[i] = (stored_bytes(server), inmemory_bytes(memory))
    for turns, (in_redis, in_memory) in measured.items():
        record_property(FIGURES, f"{turns} turns: redis {in_redis} B, InMemorySaver {in_memory} B")
    r = {turns: in_redis for turns, (in_redis, _) in measured.items()}
    assert r[100] <= 2.3 * r[50]
    assert r[200] <= 2.3 * r[100]
    state = await redis_agent.aget_state(thread("long"))
    assert len(state.values["messages"]) == 400
