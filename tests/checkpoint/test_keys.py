"""Key layout and lifetime: one hash tag (one slot) per thread, a sliding TTL shared by every key
of the thread, and nothing of a thread left behind by its deletion or expiry."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis.crc import key_slot

from chat_history_k8s.checkpoint import RedisCheckpointSaver
from chat_history_k8s.checkpoint.layout import (
    ThreadKeys,
    index_pattern,
    tag,
    thread_of_index_key,
    untag,
)
from tests.checkpoint.conftest import SaverFactory, make_agent, say, thread, user_text

ODD_IDS = ["", "%", "%7D", "a}b", "{x}", "}{", "ünïcode", "a:b|c", "*?[x]\\"]


@pytest.mark.parametrize("thread_id", ODD_IDS)
def test_a_tag_is_reversible_and_never_cut_short(thread_id: str) -> None:
    assert untag(tag(thread_id)) == thread_id
    assert tag(thread_id) and "}" not in tag(thread_id)
    keys = ThreadKeys("p{re}:", thread_id).all
    assert len({key_slot(k.encode()) for k in keys}) == 1
    index = ThreadKeys("p*:", thread_id).key("idx")
    assert thread_of_index_key("p*:", index) == thread_id
    assert index_pattern("p*:") == "p\\*:{*}:idx"


def test_distinct_threads_never_share_a_key() -> None:
    assert len({ThreadKeys("p:", t).key("cp") for t in ODD_IDS}) == len(ODD_IDS)


async def test_every_key_of_a_thread_is_in_the_threads_slot(
    saver: RedisCheckpointSaver, server: redis.Redis
) -> None:
    agent = make_agent(saver)
    for thread_id in ("a}b", "{x}", ""):
        async with saver.alease(thread_id) as lease:
            await say(agent, lease.config(), "hello")
    found = [k.decode() for k in server.scan_iter("chat-history:ckpt:*")]
    by_thread: dict[str, set[int]] = {}
    for key in found:
        thread_id = untag(key[len("chat-history:ckpt:{") : key.rindex("}:")])
        by_thread.setdefault(thread_id, set()).add(key_slot(key.encode()))
    assert set(by_thread) == {"a}b", "{x}", ""}
    assert all(len(slots) == 1 for slots in by_thread.values())
    assert len(found) == 3 * 7  # every key but the released lease


async def test_every_key_shares_one_sliding_ttl_and_the_thread_expires_whole(
    new_saver: SaverFactory, server: redis.Redis
) -> None:
    saver = new_saver(ttl_seconds=3, lease_seconds=1)
    agent = make_agent(saver)
    keys = [k for k in ThreadKeys("chat-history:ckpt:", "short").all if not k.endswith(":lease")]
    await say(agent, thread("short"), "hello")
    await asyncio.sleep(1.0)  # let the TTL run down, then write again: it slides back
    async with saver.alease("short") as lease:
        await say(agent, lease.config(), "again")
        ttls = [server.pttl(k) for k in keys]
    assert all(2500 < t <= 3000 for t in ttls), ttls
    assert max(ttls) - min(ttls) < 100  # set by the same script, in the same millisecond
    # Poll until the thread is gone: at every look, all of its keys exist or none does.
    deadline = time.monotonic() + 6
    seen = []
    while (present := server.exists(*keys)) and time.monotonic() < deadline:
        seen.append(present)
        await asyncio.sleep(0.02)
    assert present == 0
    assert set(seen) == {len(keys)}
    assert await saver.aget_tuple(thread("short")) is None


async def test_ttl_zero_keeps_a_thread_and_delete_removes_every_key(
    saver: RedisCheckpointSaver, server: redis.Redis
) -> None:
    agent = make_agent(saver)
    async with saver.alease("kept") as lease:
        await say(agent, lease.config(), user_text(1))
        keys = ThreadKeys("chat-history:ckpt:", "kept").all
        assert [server.ttl(k) for k in keys[:7]] == [-1] * 7
        assert 0 < server.pttl(keys[7]) <= 30_000  # the lease: its own, short expiry
        await saver.adelete_thread("kept")
    assert server.exists(*keys) == 0
    assert await saver.aget_tuple(thread("kept")) is None


async def test_a_lease_on_a_new_thread_leaves_nothing_once_expired(
    new_saver: SaverFactory, server: redis.Redis
) -> None:
    saver = new_saver(lease_seconds=0.3)
    async with saver.alease("never-written"):
        pass
    fence = ThreadKeys("chat-history:ckpt:", "never-written").key("fence")
    assert 0 < server.pttl(fence) <= 300  # the counter lives only as long as a lease would
