"""Redis specifics: key layout, TTL, errors, and exactly two round trips per chat turn."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
import redis.sentinel
from langchain_core.messages import AIMessage, HumanMessage
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry

from chat_history_k8s.history import HistoryUnavailable, build_store
from chat_history_k8s.history.codec import DecodeCache, encode
from chat_history_k8s.history.redis import RedisChatHistory
from tests.conftest import app_client, commands_per_turn, commandstats, make_settings
from testsupport import LOOPBACK, RedisServer, wait_until


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


def test_sync_code_resends_a_read_whose_connection_failed_but_never_a_sent_append(
    own_redis: RedisServer,
) -> None:
    """The sync methods' commands (`redis.execute`): a read whose connection fails is sent again
    as the client's retry policy says; an append that was sent may have been applied, so it is
    not (redis-py's own `execute_command` sends it again: the turn would be stored twice)."""
    client = own_redis.client(socket_timeout=0.3, retry=Retry(ConstantBackoff(1.5), 1))
    history = RedisChatHistory("s", client=client, ttl_seconds=60)
    history.append_turn([HumanMessage(content="a")])  # connected, and the script is loaded

    def hang_for_a_while() -> None:
        """The server stops (what is sent waits in its socket: the command times out), and
        runs again while the client backs off before its retry."""
        own_redis.process.send(signal.SIGSTOP)
        threading.Timer(0.8, own_redis.process.send, [signal.SIGCONT]).start()

    hang_for_a_while()
    assert [m.text for m in history.get_window(0)] == ["a"]  # timed out, sent again
    hang_for_a_while()
    with pytest.raises(HistoryUnavailable, match="Timeout"):
        history.append_turn([HumanMessage(content="b")])
    # The server runs the append once it runs again: the turn is stored once.
    wait_until(lambda: len(history.get_window(0)) > 1, timeout_s=5, what="the append")
    time.sleep(1.5)  # past the moment a retry would have come
    assert [m.text for m in history.get_window(0)] == ["a", "b"]
    # A failed connection was dropped, not handed back with a late reply waiting on it.
    assert history.append_turn([HumanMessage(content="c")]) == 2


def test_sync_code_sends_an_append_a_demoted_primary_refused_to_the_new_one(
    tmp_path: Path,
) -> None:
    """A Sentinel client's connection to a primary that was demoted turns its READONLY answer
    into a connection error: that append was refused, not applied, so it is sent again, to
    the primary the Sentinels name now, and stored once. (Real servers; the Sentinels' answers
    are given: the demoted primary's address, then the new one's.)"""
    new, old = RedisServer(tmp_path / "new"), RedisServer(tmp_path / "old")
    new.start()
    old.start()
    try:
        with old.client() as demoted:
            demoted.replicaof(LOOPBACK, new.port)  # it answers writes with READONLY now

        answers = [(LOOPBACK, old.port), (LOOPBACK, new.port)]

        class Sentinels:
            def discover_master(self, service_name: str) -> tuple[str, int]:
                return answers.pop(0) if len(answers) > 1 else answers[0]

        pool = redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]  # untyped in redis-py
            "primary", Sentinels(), retry=Retry(NoBackoff(), 1)
        )
        history = RedisChatHistory("s", client=redis.Redis(connection_pool=pool))
        assert history.append_turn([HumanMessage(content="a")]) == 0
        assert answers == [(LOOPBACK, new.port)]  # asked again after READONLY
        with new.client() as primary:
            assert primary.lrange("chat-history:s", 0, -1) == [encode(HumanMessage(content="a"))]
        pool.disconnect()
    finally:
        old.stop()
        new.stop()


def test_a_client_with_an_execute_command_or_a_connection_of_its_own_keeps_them(
    redis_url: str,
) -> None:
    """A subclass (or a tracing integration) that wraps `execute_command` sees the sync
    methods' commands; a single-connection client's commands use that connection."""
    seen: list[str] = []

    class Traced(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            seen.append(args[0])
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    traced = Traced.from_url(redis_url)
    single = redis.Redis.from_url(redis_url, single_connection_client=True)
    for name, client in (("traced", traced), ("single", single)):
        history = RedisChatHistory(name, client=client, max_messages=3)
        for word in ("a", "b", "c", "d"):
            history.append_turn([HumanMessage(content=word)])
        assert [m.text for m in history.get_window(0)] == ["b", "c", "d"]
        client.close()
    assert seen.count("LRANGE") == 1 and seen.count("EVALSHA") == 4  # (and EVAL after NOSCRIPT)
