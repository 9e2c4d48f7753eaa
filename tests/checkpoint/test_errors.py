"""Store failures raise HistoryUnavailable (the API's 503), fast, and leave nothing half-written."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aredis

from chat_history_k8s.checkpoint import LeaseLost, RedisCheckpointSaver, ThreadBusy
from chat_history_k8s.history import HistoryUnavailable
from tests.checkpoint.conftest import make_agent, say, thread
from testsupport import RedisServer

Savers = Callable[..., RedisCheckpointSaver]


async def test_an_unreachable_store_raises_history_unavailable_fast(
    own_redis: RedisServer, saver_on: Savers
) -> None:
    own_redis.stop()
    saver = saver_on(own_redis.url, connect_timeout_seconds=0.5)
    agent = make_agent(saver)
    started = time.monotonic()
    with pytest.raises(HistoryUnavailable, match="ConnectionError"):
        await say(agent, thread("t"), "hello")
    with pytest.raises(HistoryUnavailable):
        await saver.aget_tuple(thread("t"))
    with pytest.raises(HistoryUnavailable):
        saver.get_tuple(thread("t"))
    with pytest.raises(HistoryUnavailable):
        await saver.aacquire_lease("t")
    assert time.monotonic() - started < 2


async def test_a_refused_write_stores_nothing(own_redis: RedisServer, saver_on: Savers) -> None:
    saver = saver_on(own_redis.url)
    agent = make_agent(saver)
    await say(agent, thread("t"), "stored")
    before = await saver.aget_tuple(thread("t"))
    with own_redis.client() as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")  # over the limit: every write script is refused
        with pytest.raises(HistoryUnavailable, match="OutOfMemory"):
            await say(agent, thread("t"), "refused")
        admin.config_set("maxmemory", "0")
    after = await saver.aget_tuple(thread("t"))
    assert before is not None and after is not None
    assert after.checkpoint == before.checkpoint
    assert after.pending_writes == before.pending_writes
    assert after.checkpoint["channel_values"]["messages"][0].text == "stored"


def test_lease_errors_are_history_unavailable_for_the_api() -> None:
    assert issubclass(ThreadBusy, HistoryUnavailable)
    assert issubclass(LeaseLost, HistoryUnavailable)


def test_the_saver_checks_its_settings_and_clients() -> None:
    with pytest.raises(ValueError, match="needs async_client"):
        RedisCheckpointSaver()
    client = aredis.Redis()
    with pytest.raises(ValueError, match=">= 0"):
        RedisCheckpointSaver(async_client=client, max_checkpoints=-1)
    with pytest.raises(ValueError, match="at least lease_seconds"):
        RedisCheckpointSaver(async_client=client, ttl_seconds=5, lease_seconds=30)
    with pytest.raises(RuntimeError, match="without a sync `client`"):
        RedisCheckpointSaver(async_client=client).get_tuple(thread("t"))
    with pytest.raises(ValueError, match="may not contain NUL"):
        RedisCheckpointSaver(client=redis.Redis()).put_writes(
            {"configurable": {"thread_id": "t", "checkpoint_ns": "a\0b", "checkpoint_id": "1"}},
            [("c", 1)],
            "task",
        )
