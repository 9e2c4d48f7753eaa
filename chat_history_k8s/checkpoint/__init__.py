"""LangGraph checkpointers for the service's `checkpointer` API, and per-thread turn serialization.

- `RedisCheckpointSaver`: plain Redis/Valkey >= 7 (no modules), bounded, sliding TTL, one hash
  tag per thread, one round trip per checkpointer call; its `alease`/`lease` serialize the
  turns of a thread across replicas with a fenced lease.
- `LocalThreadLocks`: the in-process equivalent for `InMemorySaver`.
- Errors: `ThreadBusy` and `LeaseLost`, both `HistoryUnavailable` (503 unless mapped).

A turn, the same for both (8 Redis round trips with `create_agent` and no tools):

    saver = RedisCheckpointSaver(async_client=client, ttl_seconds=86_400)
    agent = create_agent(model, tools=[], checkpointer=saver)
    async with saver.alease(thread_id) as lease:  # or LocalThreadLocks().alease(...)
        state = await agent.ainvoke({"messages": [HumanMessage(text)]}, lease.config())
    before = len(state["messages"]) - 2  # the messages stored before this turn

Reading a thread is `await agent.aget_state({"configurable": {"thread_id": thread_id}})`
(no `messages` value: no such thread), deleting it `await saver.adelete_thread(thread_id)`.
"""

from chat_history_k8s.checkpoint.lease import (
    LEASE_CONFIG_KEY,
    LeaseLost,
    LocalThreadLocks,
    ThreadBusy,
    ThreadLease,
)
from chat_history_k8s.checkpoint.saver import RedisCheckpointSaver

__all__ = [
    "LEASE_CONFIG_KEY",
    "LeaseLost",
    "LocalThreadLocks",
    "RedisCheckpointSaver",
    "ThreadBusy",
    "ThreadLease",
]
