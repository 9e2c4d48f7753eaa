"""Concurrent turns on one thread, through several replicas: serialized by a fenced lease, so no
turn is lost; a dead holder blocks the thread only until its lease expires, and then can no
longer write."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from langchain_core.messages import BaseMessage

from chat_history_k8s.checkpoint import (
    LEASE_CONFIG_KEY,
    LeaseLost,
    RedisCheckpointSaver,
    ThreadBusy,
    ThreadLease,
)
from chat_history_k8s.checkpoint.layout import ThreadKeys
from chat_history_k8s.history import HistoryUnavailable
from tests.checkpoint.conftest import SaverFactory, make_agent, say, thread
from testsupport import RedisServer, await_until

TURNS = 50


def assert_whole_turns(messages: list[BaseMessage], texts: set[str]) -> None:
    """Every human message is followed by its own reply, and each reply saw every turn before."""
    assert len(messages) == 2 * len(texts)
    for i in range(0, len(messages), 2):
        human, ai = messages[i], messages[i + 1]
        assert (human.type, ai.type) == ("human", "ai")
        assert ai.text == f'You said: "{human.text}". I can see {i} earlier messages.'
    assert {m.text for m in messages[::2]} == texts


async def test_fifty_concurrent_turns_through_three_replicas_lose_nothing(
    new_saver: SaverFactory,
) -> None:
    replicas = [new_saver(lease_wait_seconds=120) for _ in range(3)]
    agents = [make_agent(s) for s in replicas]
    acquired: list[int] = []

    async def turn(k: int) -> None:
        saver, agent = replicas[k % 3], agents[k % 3]
        async with saver.alease("shared") as lease:
            acquired.append(lease.fence)
            await say(agent, lease.config(), f"turn {k}")

    await asyncio.gather(*(turn(k) for k in range(TURNS)))
    state = await agents[0].aget_state(thread("shared"))
    assert_whole_turns(state.values["messages"], {f"turn {k}" for k in range(TURNS)})
    assert acquired == list(range(1, TURNS + 1))  # one fence per turn, in the order they ran


async def test_without_a_lease_concurrent_turns_do_lose_turns(new_saver: SaverFactory) -> None:
    """The control: the failure the lease prevents is real."""
    agents = [make_agent(new_saver()) for _ in range(3)]
    await asyncio.gather(*(say(agents[k % 3], thread("raw"), f"turn {k}") for k in range(20)))
    state = await agents[0].aget_state(thread("raw"))
    assert len(state.values["messages"]) < 40


async def test_a_dead_holder_blocks_the_thread_only_until_its_lease_expires(
    new_saver: SaverFactory,
) -> None:
    dead_replica, live_replica = new_saver(lease_seconds=1.0), new_saver(lease_seconds=1.0)
    dead_agent, live_agent = make_agent(dead_replica), make_agent(live_replica)
    await say(live_agent, thread("t"), "before the crash")
    # A replica takes the thread and dies: it never releases it.
    dead = await dead_replica.aacquire_lease("t", wait_seconds=0)
    started = time.monotonic()
    async with live_replica.alease("t", wait_seconds=10) as lease:
        waited = time.monotonic() - started
        assert lease.fence == dead.fence + 1
        await say(live_agent, lease.config(), "after the crash")
    assert 0.8 <= waited < 2.0
    # Were it only paused, its writes are now refused: fenced by the newer lease.
    with pytest.raises(LeaseLost, match="no longer holds"):
        await say(dead_agent, dead.config(), "zombie turn")
    state = await live_agent.aget_state(thread("t"))
    texts = [m.text for m in state.values["messages"][::2]]
    assert texts == ["before the crash", "after the crash"]


async def test_a_turn_whose_lease_expired_cannot_write(
    new_saver: SaverFactory, server: redis.Redis
) -> None:
    saver = new_saver(lease_seconds=0.5)
    agent = make_agent(saver)
    async with saver.alease("t") as lease:
        await say(agent, lease.config(), "first")
    before = await saver.aget_tuple(thread("t"))
    async with saver.alease("t") as lease:
        lease_key = ThreadKeys("chat-history:ckpt:", "t").key("lease")
        deadline = time.monotonic() + 5
        while server.exists(lease_key) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not server.exists(lease_key)
        with pytest.raises(LeaseLost):
            await say(agent, lease.config(), "too late")
    after = await saver.aget_tuple(thread("t"))
    assert before is not None and after is not None
    assert after.checkpoint["id"] == before.checkpoint["id"]  # nothing of the turn was stored


async def test_a_busy_thread_raises_thread_busy_after_the_bounded_wait(
    new_saver: SaverFactory,
) -> None:
    first, second = new_saver(), new_saver()
    async with first.alease("t"):
        started = time.monotonic()
        with pytest.raises(ThreadBusy, match="busy"):
            async with second.alease("t", wait_seconds=0.3):
                pytest.fail("the thread was held")
        assert 0.3 <= time.monotonic() - started < 1.0
        with pytest.raises(ThreadBusy), second.lease("t", wait_seconds=0.1):
            pytest.fail("the thread was held")


async def test_writes_without_the_lease_are_refused_while_a_turn_holds_the_thread(
    saver: RedisCheckpointSaver,
) -> None:
    agent = make_agent(saver)
    async with saver.alease("t"):
        with pytest.raises(LeaseLost, match="another turn holds"):
            await say(agent, thread("t"), "sneaking in")
    assert await saver.aget_tuple(thread("t")) is None
    await say(agent, thread("t"), "unleased use still works")


async def test_deleting_a_thread_fences_out_its_running_turn(saver: RedisCheckpointSaver) -> None:
    agent = make_agent(saver)
    async with saver.alease("t") as lease:
        await say(agent, lease.config(), "hello")
        await saver.adelete_thread("t")
        with pytest.raises(LeaseLost):
            await say(agent, lease.config(), "bring it back")
    assert await saver.aget_tuple(thread("t")) is None


def test_the_sync_lease_serializes_sync_turns(saver: RedisCheckpointSaver) -> None:
    agent = make_agent(saver)
    fences = []
    for text in ("my name is Ada", "what is my name?"):
        with saver.lease("sync") as lease:
            fences.append(lease.fence)
            state = agent.invoke({"messages": [("user", text)]}, lease.config())
    assert re.match(r"Your name is Ada\.", state["messages"][-1].text)
    assert fences == [1, 2]
    stored = saver.get_tuple(thread("sync"))
    assert stored is not None
    assert not any(LEASE_CONFIG_KEY in str(v) for v in stored.metadata.values())
    assert LEASE_CONFIG_KEY not in stored.metadata


def test_a_lease_config_keeps_the_callers_config_and_adds_the_thread_and_token() -> None:
    lease = ThreadLease("t", "7:abc")
    base: Any = {"recursion_limit": 5, "configurable": {"user": "u"}}
    assert lease.config(base) == {
        "recursion_limit": 5,
        "configurable": {"user": "u", "thread_id": "t", LEASE_CONFIG_KEY: "7:abc"},
    }
    assert base == {"recursion_limit": 5, "configurable": {"user": "u"}}
    assert lease.fence == 7
    assert ThreadLease("t").config() == {"configurable": {"thread_id": "t"}}


async def test_a_lease_whose_acquire_got_no_reply_is_released_once_redis_answers(
    own_redis: RedisServer, saver_on: Callable[..., RedisCheckpointSaver]
) -> None:
    """A hung Redis runs an acquire when it resumes, after its caller gave up: that lease would
    block the thread for the whole lease time. The saver releases it in the background."""
    saver = saver_on(own_redis.url, timeout_seconds=0.3)  # lease_seconds: 30
    keys = ThreadKeys("chat-history:ckpt:", "t")
    async with saver.alease("warm"):
        pass  # the server knows the scripts now, as it does once a replica has served a turn
    own_redis.process.send(signal.SIGSTOP)
    try:
        with pytest.raises(HistoryUnavailable, match="Timeout"):
            await saver.aacquire_lease("t", wait_seconds=0)
    finally:
        own_redis.process.send(signal.SIGCONT)
    with own_redis.client() as server:

        async def released() -> bool:
            return server.get(keys.key("fence")) == b"1" and not server.exists(keys.key("lease"))

        await await_until(released, timeout_s=5, what="the acquire to run and its lease to go")
    async with saver.alease("t", wait_seconds=0) as lease:
        assert lease.fence == 2
