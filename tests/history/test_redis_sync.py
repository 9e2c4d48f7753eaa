"""The sync history's commands (chat_history_k8s/history/redis_sync.py): on a direct pool's
connections and on redis-py's path, against real servers."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.sentinel
from langchain_core.messages import HumanMessage
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry

from chat_history_k8s.history import HistoryUnavailable
from chat_history_k8s.history.codec import encode
from chat_history_k8s.history.redis import RedisChatHistory
from chat_history_k8s.history.redis_sync import direct_pool, execute
from tests.conftest import commandstats
from testsupport import LOOPBACK, RedisServer, wait_until

# The two ways a command goes: a direct pool's connection (redis-py's own ConnectionPool), and
# redis-py's get_connection/send_command/read_response (here a blocking pool's).
POOLS: dict[str, Callable[..., redis.ConnectionPool]] = {
    "direct": redis.ConnectionPool,
    "redis-py": redis.BlockingConnectionPool,
}


def client_of(server: RedisServer, pool: str, **options: Any) -> redis.Redis:
    client = redis.Redis(connection_pool=POOLS[pool](host=LOOPBACK, port=server.port, **options))
    assert direct_pool(client.connection_pool) is (pool == "direct")
    return client


def texts(history: RedisChatHistory) -> list[str]:
    return [m.text for m in history.get_window(0)]


def connection_id(client: redis.Redis) -> int:
    """The server's id for the connection the history's commands get from `client`'s pool."""
    return int(execute(client, ("CLIENT", "ID"), idempotent=True))


@pytest.mark.parametrize("pool", POOLS)
def test_a_read_whose_connection_failed_is_sent_again_but_never_a_sent_append(
    own_redis: RedisServer, pool: str
) -> None:
    """A read whose connection fails is sent again as the client's retry policy says; an
    append that was sent may have been applied, so it is not (redis-py's own `execute_command`
    sends it again: the turn would be stored twice)."""
    client = client_of(own_redis, pool, socket_timeout=0.3, retry=Retry(ConstantBackoff(1.5), 1))
    history = RedisChatHistory("s", client=client, ttl_seconds=60)
    history.append_turn([HumanMessage(content="a")])  # connected, and the script is loaded

    def hang_for_a_while() -> None:
        """The server stops (what is sent waits in its socket: the command times out), and
        runs again while the client backs off before its retry."""
        own_redis.process.send(signal.SIGSTOP)
        threading.Timer(0.8, own_redis.process.send, [signal.SIGCONT]).start()

    hang_for_a_while()
    assert texts(history) == ["a"]  # timed out, sent again
    hang_for_a_while()
    with pytest.raises(HistoryUnavailable, match="Timeout"):
        history.append_turn([HumanMessage(content="b")])
    # The server runs the append once it runs again: the turn is stored once.
    wait_until(lambda: len(history.get_window(0)) > 1, timeout_s=5, what="the append")
    time.sleep(1.5)  # past the moment a retry would have come
    assert texts(history) == ["a", "b"]
    # A failed connection was dropped, not handed back with a late reply waiting on it.
    assert history.append_turn([HumanMessage(content="c")]) == 2
    client.close()


@pytest.mark.parametrize("pool", POOLS)
def test_a_connection_the_server_closed_while_idle_is_replaced_before_an_append(
    own_redis: RedisServer, pool: str
) -> None:
    """A pooled connection the server closed (its idle timeout, CLIENT KILL) is found closed
    before the append is sent on it, and replaced: the append is neither lost nor failed
    (without the check it would be sent into a dead socket: a sent write, never retried)."""
    client = client_of(own_redis, pool)  # no retry: a failed append would raise
    history = RedisChatHistory("s", client=client)
    history.append_turn([HumanMessage(content="a")])
    before = connection_id(client)
    with own_redis.client() as admin:
        assert admin.client_kill_filter(_id=before) == 1
    assert history.append_turn([HumanMessage(content="b")]) == 1
    assert texts(history) == ["a", "b"]
    assert connection_id(client) != before
    client.close()


@pytest.mark.parametrize("pool", POOLS)
def test_a_reply_left_unread_on_a_pooled_connection_is_never_taken_for_the_next_one(
    redis_url: str, redis_server: RedisServer, pool: str
) -> None:
    """Other code sharing the client put a connection back with a reply unread on it: the
    history's next command does not read that reply as its own."""
    client = client_of(redis_server, pool)
    history = RedisChatHistory("s", client=client)
    history.append_turn([HumanMessage(content="a")])
    conn = client.connection_pool.get_connection()
    conn.send_command("ECHO", "stale")  # type: ignore[no-untyped-call]  # untyped in redis-py
    wait_until(conn.can_read, timeout_s=5, what="the reply in the socket")
    client.connection_pool.release(conn)
    assert texts(history) == ["a"]
    assert history.append_turn([HumanMessage(content="b")]) == 1
    assert texts(history) == ["a", "b"]
    client.close()


def test_an_error_reply_is_raised_and_leaves_its_connection_in_use(redis_url: str) -> None:
    """An error reply (here WRONGTYPE: the key holds a string) is read whole: the history
    raises it as unavailable, and the same connection serves the next command."""
    client = redis.Redis.from_url(redis_url)
    history = RedisChatHistory("s", client=client)
    client.set(history.key, "not a list")
    before = connection_id(client)
    with pytest.raises(HistoryUnavailable, match="WRONGTYPE"):
        history.get_window(0)
    with pytest.raises(HistoryUnavailable, match="WRONGTYPE"):
        history.append_turn([HumanMessage(content="a")])
    client.delete(history.key)
    assert history.append_turn([HumanMessage(content="a")]) == 0
    assert connection_id(client) == before
    client.close()


def test_threads_sharing_a_client_each_get_their_turns_and_return_every_connection(
    redis_url: str,
) -> None:
    """Eight threads, one client: every turn is stored in its session, in order, and every
    connection the pool made is back in it afterwards (none lost, none handed out twice)."""
    client = redis.Redis.from_url(redis_url)
    threads, turns = 8, 40
    errors: list[BaseException] = []

    def chat(name: str) -> None:
        history = RedisChatHistory(name, client=client, max_messages=10)
        try:
            for i in range(turns):
                history.get_window(10)
                history.append_turn([HumanMessage(content=f"{name} {i}")])
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    workers = [threading.Thread(target=chat, args=(f"t{k}",)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    for k in range(threads):
        history = RedisChatHistory(f"t{k}", client=client)
        assert texts(history) == [f"t{k} {i}" for i in range(turns - 10, turns)]
    pool = client.connection_pool
    assert 1 <= len(pool._available_connections) <= threads
    assert pool._in_use_connections == set()
    client.close()


def test_a_forked_child_gets_connections_of_its_own(redis_url: str) -> None:
    """After a fork, the child's commands go on connections it opened, never on its parent's
    sockets (replies would cross between the processes)."""
    client = redis.Redis.from_url(redis_url)
    history = RedisChatHistory("s", client=client)
    history.append_turn([HumanMessage(content="parent")])
    parent_id = connection_id(client)
    child = os.fork()
    if child == 0:  # pragma: no cover - measured in the child, which exits
        try:
            ok = connection_id(client) != parent_id
            ok = ok and history.append_turn([HumanMessage(content="child")]) == 1
            ok = ok and texts(history) == ["parent", "child"]
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert connection_id(client) == parent_id
    assert texts(history) == ["parent", "child"]
    client.close()


def test_clients_that_ask_for_more_than_a_direct_pool_does_get_redis_pys_path(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Health checks (a PING before a command on a connection idle past the interval) are
    redis-py's own: a client that asks for them gets them, and the same turns; a client of a
    direct pool sends no PING."""
    checked = redis.Redis.from_url(redis_url, health_check_interval=1)
    plain = redis.Redis.from_url(redis_url)
    assert not direct_pool(checked.connection_pool) and direct_pool(plain.connection_pool)
    with redis_server.client() as admin:
        for name, client in (("checked", checked), ("plain", plain)):
            history = RedisChatHistory(name, client=client)
            history.append_turn([HumanMessage(content="a")])
            pings = commandstats(admin).get("ping", 0)
            time.sleep(1.2)
            history.append_turn([HumanMessage(content="b")])
            assert texts(history) == ["a", "b"]
            assert commandstats(admin).get("ping", 0) - pings == (name == "checked")
            client.close()


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
        assert not direct_pool(pool)
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
        assert texts(history) == ["b", "c", "d"]
        client.close()
    assert seen.count("LRANGE") == 1 and seen.count("EVALSHA") == 4  # (and EVAL after NOSCRIPT)


@pytest.mark.parametrize("pool", POOLS)
def test_push_messages_waiting_on_a_connection_are_handled_and_the_connection_kept(
    redis_url: str, redis_server: RedisServer, pool: str
) -> None:
    """RESP3 push messages (here invalidations: CLIENT TRACKING on the pooled connection, then
    another client changes a tracked key) are not a stale reply: they are handed to redis-py's
    handlers, and the connection keeps serving the history (a reply is never a push)."""
    client = client_of(redis_server, pool, protocol=3)
    history = RedisChatHistory("s", client=client)
    history.append_turn([HumanMessage(content="a")])
    before = connection_id(client)
    assert execute(client, ("CLIENT", "TRACKING", "ON"), idempotent=True) == b"OK"
    with redis_server.client() as admin:
        for last, word in ((None, b"x"), (b"x", b"y")):
            assert execute(client, ("GET", "tracked"), idempotent=True) == last  # tracked now
            admin.set("tracked", word)  # an invalidation is pushed to the tracking connection
            wait_until(lambda: _unread(client), timeout_s=5, what="the invalidation")
            assert texts(history) == ["a"]  # the push waited at checkout: handled
        assert execute(client, ("GET", "tracked"), idempotent=True) == b"y"
        admin.set("tracked", "z")
        wait_until(lambda: _unread(client), timeout_s=5, what="the invalidation")
    assert history.append_turn([HumanMessage(content="b")]) == 1
    assert texts(history) == ["a", "b"]
    assert connection_id(client) == before
    client.close()


def _unread(client: redis.Redis) -> bool:
    """Whether the pool's idle connection has something unread in its socket."""
    pool = client.connection_pool
    # A blocking pool keeps all of its connections in `_connections`.
    conns = getattr(pool, "_available_connections", None) or getattr(pool, "_connections", [])
    socks = [c._sock for c in conns if c is not None and c._sock is not None]
    return bool(socks and select.select(socks, [], [], 0)[0])
