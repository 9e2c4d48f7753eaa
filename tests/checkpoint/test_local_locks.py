"""The in-process twin for InMemorySaver: per-thread asyncio locks, bounded in wait and size."""

from __future__ import annotations

import asyncio
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from chat_history_k8s.checkpoint import LocalThreadLocks, ThreadBusy
from tests.checkpoint.conftest import make_agent, say, thread
from tests.checkpoint.test_lease import assert_whole_turns


async def test_fifty_concurrent_turns_on_an_in_memory_saver_lose_nothing() -> None:
    locks, agent = LocalThreadLocks(), make_agent(InMemorySaver())

    async def turn(k: int) -> None:
        async with locks.alease("shared") as lease:
            await say(agent, lease.config(), f"turn {k}")

    await asyncio.gather(*(turn(k) for k in range(50)))
    state = await agent.aget_state(thread("shared"))
    assert_whole_turns(state.values["messages"], {f"turn {k}" for k in range(50)})
    assert len(locks) == 0  # no lock outlives the turns that needed it


async def test_a_held_thread_is_busy_after_the_wait_and_others_are_not() -> None:
    locks = LocalThreadLocks(wait_seconds=0.2)
    async with locks.alease("a"):
        started = time.monotonic()
        with pytest.raises(ThreadBusy, match="busy"):
            async with locks.alease("a"):
                pytest.fail("the thread was held")
        assert 0.2 <= time.monotonic() - started < 1.0
        async with locks.alease("b") as other:
            assert other.config() == {"configurable": {"thread_id": "b"}}
    async with locks.alease("a"):
        pass  # released after the timeout: not leaked to the waiter that gave up


async def test_the_number_of_threads_in_flight_is_bounded() -> None:
    locks = LocalThreadLocks(max_threads=2)
    async with locks.alease("a"), locks.alease("b"):
        with pytest.raises(ThreadBusy, match="limit"):
            async with locks.alease("c"):
                pytest.fail("over the limit")
        assert len(locks) == 2
    assert len(locks) == 0
