"""Redis specifics: key layout, TTL, errors, and exactly two round trips per chat turn."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
import redis.sentinel
from langchain_core.messages import AIMessage, HumanMessage

from chat_history_k8s.history import HistoryUnavailable, build_store
from chat_history_k8s.history.codec import DecodeCache
from chat_history_k8s.history.redis import RedisChatHistory
from tests.conftest import app_client, commands_per_turn, commandstats, make_settings


@pytest.mark.parametrize("prior_messages", [0, 100, 1000, 4000])
async def test_a_chat_turn_is_exactly_two_round_trips_whatever_the_history_length(
    redis_url: str, count_round_trips: list[int], prior_messages: int
) -> None:
    settings = make_settings("redis", redis_url, history_max_messages=10_000)
    history = RedisChatHistory("long", client=redis.Redis.from_url(redis_url))
    prior = [HumanMessage(content=f"q{i}") for i in range(prior_messages // 2)]
    history.append_turn([m for q in prior for m in (q, AIMessage(content=f"re {q.text}"))])
    server = redis.Redis.from_url(redis_url)
    async with app_client(settings) as client:
        warm = await client.post("/v1/chat", json={"session_id": "warm", "message": "hi"})
        assert warm.status_code == 200  # the pool has connected (HELLO etc. are not per turn)
        count_round_trips[0] = 0
        before = commandstats(server)
        for _ in range(5):
            r = await client.post("/v1/chat", json={"session_id": "long", "message": "again"})
            assert r.status_code == 200
        after = commandstats(server)
    assert count_round_trips[0] == 10
    per_turn = commands_per_turn(before, after, 5)
    assert per_turn == {
        "lrange": 1, "evalsha": 1, "rpush": 1, "ltrim": 1, "expire": 1,  # the last 3: the script's
    }  # fmt: skip
    assert r.json()["history_length"] == prior_messages + 8


async def test_a_session_is_one_list_with_a_sliding_ttl_and_a_cap(redis_url: str) -> None:
    settings = make_settings(
        "redis", redis_url, history_ttl_seconds=300, history_max_messages=4,
        history_window_messages=2, redis_key_prefix="app1:",
    )  # fmt: skip
    async with app_client(settings) as client:
        for i in range(3):
            await client.post("/v1/chat", json={"session_id": "s.1", "message": f"m{i}"})
    server = redis.Redis.from_url(redis_url, decode_responses=True)
    assert server.keys("*") == ["app1:s.1"]
    assert server.type("app1:s.1") == "list"
    assert server.llen("app1:s.1") == 4
    assert 295 <= server.ttl("app1:s.1") <= 300


async def test_no_ttl_leaves_the_key_persistent(redis_url: str) -> None:
    settings = make_settings("redis", redis_url, history_ttl_seconds=0)
    async with app_client(settings) as client:
        await client.post("/v1/chat", json={"session_id": "forever", "message": "hi"})
    assert redis.Redis.from_url(redis_url).ttl("chat-history:forever") == -1


async def test_an_unreachable_store_raises_history_unavailable_fast(own_redis: Any) -> None:
    own_redis.stop()
    store = build_store(make_settings("redis", own_redis.url))
    started = time.monotonic()
    with pytest.raises(HistoryUnavailable, match="ConnectionError"):
        await store.history("s").aget_window(2)
    with pytest.raises(HistoryUnavailable):
        await store.history("s").aappend_turn([HumanMessage(content="x")])
    with pytest.raises(HistoryUnavailable):
        await store.ping()
    assert time.monotonic() - started < 2
    await store.aclose()


def test_the_class_needs_a_client() -> None:
    with pytest.raises(ValueError, match="needs async_client"):
        RedisChatHistory("s")
    with pytest.raises(RuntimeError, match="without a sync `client`"):
        RedisChatHistory("s", async_client=aredis.Redis()).get_window(2)


async def test_a_history_built_from_a_url_works_from_sync_and_async_code(redis_url: str) -> None:
    history = RedisChatHistory.from_url("both", redis_url, max_messages=10)
    try:
        history.add_messages([HumanMessage(content="sync hi"), AIMessage(content="sync hello")])
        await history.aadd_messages([HumanMessage(content="async hi"), AIMessage(content="ok")])
        assert [m.text for m in history.messages] == ["sync hi", "sync hello", "async hi", "ok"]
        assert [m.text for m in await history.aget_messages()] == [m.text for m in history.messages]
        assert "sync hi" in str(history)  # BaseChatMessageHistory.__str__ reads synchronously
        await history.aclear()
        assert history.messages == []
    finally:
        history.close()
        await history.aclose()


def test_an_explicit_async_client_says_how_to_get_sync_methods(redis_url: str) -> None:
    history = RedisChatHistory("only-async", async_client=aredis.Redis.from_url(redis_url))
    with pytest.raises(RuntimeError, match="from_url"):
        _ = history.messages


async def test_a_server_without_the_script_gets_its_source_once(
    redis_url: str, count_round_trips: list[int]
) -> None:
    """After a restart or failover the server has no scripts: the append answers NOSCRIPT, is
    sent again as EVAL (one more round trip), and the next appends are EVALSHA again. (With
    WAIT: tests/history/test_redis_sentinel.py.)"""
    server = redis.Redis.from_url(redis_url)
    client = aredis.Redis.from_url(redis_url)
    history = RedisChatHistory("s", async_client=client, max_messages=3, ttl_seconds=60)
    await client.ping()  # connected: the handshake is not a round trip of the append
    server.script_flush()
    count_round_trips[0] = 0
    before = commandstats(server)
    assert await history.aappend_turn([HumanMessage(content="a"), AIMessage(content="b")]) == 0
    assert count_round_trips[0] == 2
    assert await history.aappend_turn([HumanMessage(content="c"), AIMessage(content="d")]) == 2
    assert count_round_trips[0] == 3
    after = commandstats(server)
    calls = {k: after[k] - before.get(k, 0) for k in ("evalsha", "eval")}
    assert calls == {"evalsha": 2, "eval": 1}
    assert [m.text for m in await history.aget_window(0)] == ["b", "c", "d"]  # capped at 3
    assert 55 <= server.ttl("chat-history:s") <= 60
    await client.aclose()


def test_a_large_append_is_one_script_call(redis_url: str) -> None:
    """Lua's unpack takes a few thousand values: the script pushes in slices, still atomic."""
    client = redis.Redis.from_url(redis_url)
    history = RedisChatHistory("big", client=client)
    messages = [HumanMessage(content=f"m{i}") for i in range(20_000)]
    assert history.append_turn(messages) == 0
    assert client.llen("chat-history:big") == 20_000
    assert [m.text for m in history.get_window(2)] == ["m19998", "m19999"]
    assert history.append_turn(messages[:2]) == 20_000


def test_the_writer_reads_its_own_turn_back_without_decoding_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    writer_cache, reader_cache = DecodeCache(max_messages=64), DecodeCache(max_messages=64)
    writer = RedisChatHistory("own", client=client, decode_cache=writer_cache)
    reader = RedisChatHistory("own", client=client, decode_cache=reader_cache)  # another replica
    turn = [HumanMessage(content="hi"), AIMessage(content="hello", id="lc_run--1-0")]
    writer.append_turn(turn)
    assert writer.get_window(10) == reader.get_window(10) == turn
    assert writer_cache.info()["misses"] == 2 and writer_cache.info()["kept"] == 0
    # What the writer got back is what the other replica decoded from the stored bytes.
    mine, theirs = writer.get_window(10), reader.get_window(10)
    assert [m.__dict__ for m in mine] == [m.__dict__ for m in theirs]
    assert [m.model_fields_set for m in mine] == [m.model_fields_set for m in theirs]
