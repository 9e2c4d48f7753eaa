"""REDIS_MODE=sentinel on real redis-server + redis-sentinel processes (1 primary, 2 replicas,
3 Sentinels, quorum 2), both APIs: turns reach the new primary after a failover with no
restart, and REDIS_WAIT_REPLICAS makes an acknowledgement mean "on a replica too" without an
extra round trip."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis
import redis.sentinel
from langchain_core.messages import AIMessage, HumanMessage
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.backoff import NoBackoff

from chat_history_k8s.config import Settings
from chat_history_k8s.history.redis import RedisChatHistory
from chat_history_k8s.history.redis_pool import (
    PacedSentinelPool,
    SentinelPrimaryConnection,
    Sentinels,
    build_async_client,
)
from chat_history_k8s.history.redis_wait import ReplicasBehind
from tests.conftest import app_client, commandstats, make_settings, wait_ready
from testsupport import LocalSentinel, wait_until

PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"
RECOVERY_S = 10.0  # the bound on the longest run of failed turns


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    managed = LocalSentinel(
        tmp_path_factory.mktemp("sentinel"), password=PASSWORD, sentinel_password=SENTINEL_PASSWORD
    )
    managed.start()
    yield managed
    managed.stop()


@pytest.fixture
def healthy(sentinel: LocalSentinel) -> LocalSentinel:
    """Every node up, the data emptied."""
    for node in sentinel.nodes:
        if not node.running:
            sentinel.restart_as_replica(node)
    sentinel.wait_settled()
    with sentinel.primary().client() as client:
        client.flushall()
        # Emptied on every node, not only on the primary: a test that stops a replica right away
        # (and promotes it later) must not find keys of earlier tests there.
        replicas = len(sentinel.nodes) - 1
        assert client.wait(replicas, 10_000) == replicas, "FLUSHALL did not reach every replica"
    return sentinel


def sentinel_settings(sentinel: LocalSentinel, history_api: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        history_api=history_api, redis_mode="sentinel",
        redis_sentinels=sentinel.addresses, redis_sentinel_master=sentinel.master,
        redis_password=PASSWORD, redis_sentinel_password=SENTINEL_PASSWORD,
    )  # fmt: skip
    return make_settings("redis", **(values | overrides))


async def turn(client: httpx.AsyncClient, session: str, message: str) -> httpx.Response:
    return await client.post("/v1/chat", json={"session_id": session, "message": message})


async def messages(client: httpx.AsyncClient, session: str) -> list[str]:
    r = await client.get(f"/v1/sessions/{session}/messages")
    assert r.status_code == 200, r.text
    return [m["content"] for m in r.json()["messages"]]


async def test_a_killed_primary_is_replaced_within_seconds_and_no_acknowledged_turn_is_lost(
    healthy: LocalSentinel, history_api: str
) -> None:
    settings = sentinel_settings(healthy, history_api, redis_wait_replicas=1)
    async with app_client(settings) as client:
        await wait_ready(client)
        acknowledged = []
        for i in range(3):
            assert (await turn(client, "s", f"before {i}")).status_code == 200
            acknowledged.append(f"before {i}")

        old = healthy.kill_primary()
        killed = time.monotonic()
        failed = 0
        while True:  # one turn after another, as a user retrying would
            r = await turn(client, "s", f"after kill {failed}")
            if r.status_code == 200:
                acknowledged.append(f"after kill {failed}")
                break
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "history_unavailable"
            assert str(old.port) not in r.text  # no internal address in an answer
            failed += 1
            assert time.monotonic() - killed < RECOVERY_S, f"no turn succeeded; last: {r.text}"
            await asyncio.sleep(0.05)
        recovered_in = time.monotonic() - killed
        await wait_ready(client)
        assert (await client.get("/readyz")).status_code == 200
        stored = await messages(client, "s")
    assert [m for m in stored[::2] if m in acknowledged] == acknowledged, stored
    print(f"sentinel failover ({history_api}): first good turn {recovered_in:.2f}s after the kill")
    healthy.restart_as_replica(old)


async def test_after_a_manual_failover_the_next_turn_reaches_the_new_primary_at_once(
    healthy: LocalSentinel, history_api: str
) -> None:
    """The old primary stays up as a replica: pooled connections to it answer READONLY. The
    turn's own retry must ask the Sentinels again (redis-py #3874), so no turn fails."""
    settings = sentinel_settings(healthy, history_api)
    async with app_client(settings) as client:
        await wait_ready(client)
        assert (await turn(client, "m", "one")).status_code == 200
        healthy.manual_failover()
        for i in range(5):
            r = await turn(client, "m", f"after {i}")
            assert r.status_code == 200, r.text
        stored = await messages(client, "m")
    assert stored[::2] == ["one", *(f"after {i}" for i in range(5))]


def test_sync_code_appends_to_the_new_primary_after_a_manual_failover(
    healthy: LocalSentinel,
) -> None:
    """The lift-and-use history on redis-py's sync Sentinel client reaches the new primary after
    a failover, every append stored once (the Sentinels close the demoted primary's client
    connections; an append it answered READONLY: tests/history/test_redis.py)."""
    sentinels = [
        (host, int(port)) for host, port in (a.split(":") for a in healthy.addresses.split(","))
    ]
    found = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
        sentinels, sentinel_kwargs={"password": SENTINEL_PASSWORD}, password=PASSWORD
    )
    client = found.master_for(healthy.master)  # type: ignore[no-untyped-call]
    history = RedisChatHistory("sync-failover", client=client)
    history.append_turn([HumanMessage("one")])
    healthy.manual_failover()
    for i in range(3):
        history.append_turn([HumanMessage(f"after {i}")])
    assert [m.text for m in history.get_window(0)] == ["one", "after 0", "after 1", "after 2"]
    client.close()


@pytest.mark.parametrize("connection_class", [SentinelPrimaryConnection, SentinelManagedConnection])
async def test_a_retried_command_asks_the_sentinels_again(
    healthy: LocalSentinel, connection_class: type[SentinelManagedConnection]
) -> None:
    """Why SentinelPrimaryConnection exists. A connection that was open to the primary when a
    failover demoted it (no pool checkout in between: a command in flight, or a single-connection
    client): its command fails and redis-py retries it. redis-py's own SentinelManagedConnection
    reconnects to the address it had, the demoted primary, which answers READONLY to every
    retry (redis-py #3874); ours asks the Sentinels and the retry succeeds. If the stock case
    starts passing, redis-py fixed #3874 and the workaround can go."""
    sentinels = aredis.Sentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
        [("127.0.0.1", int(a.split(":")[1])) for a in healthy.addresses.split(",")],
        sentinel_kwargs={"password": SENTINEL_PASSWORD},
    )
    pool = PacedSentinelPool(  # type: ignore[no-untyped-call]  # untyped in redis-py
        healthy.master, sentinels, connection_class=connection_class, connect_wait=1.0,
        password=PASSWORD, max_connections=4, timeout=1.0,
        retry=AsyncRetry(NoBackoff(), 3, supported_errors=(redis.ConnectionError,)),
    )  # fmt: skip
    client = aredis.Redis(connection_pool=pool, single_connection_client=True)
    try:
        await client.set("k", "v")
        old = healthy.primary()
        healthy.manual_failover()
        wait_until(lambda: healthy.role(old) == "slave", timeout_s=30, what="the demotion")
        if connection_class is SentinelManagedConnection:
            with pytest.raises(redis.ConnectionError, match="previous master is now a slave"):
                await client.set("k", "w")
        else:
            await client.set("k", "w")
            assert await client.get("k") == b"w"
    finally:
        await client.aclose()
        await pool.disconnect()
        for sentinel_client in sentinels.sentinels:
            await sentinel_client.aclose()


@pytest.mark.parametrize("sentinel_class", [Sentinels, aredis.Sentinel])
async def test_concurrent_discoveries_keep_every_sentinel(
    healthy: LocalSentinel, sentinel_class: type[aredis.Sentinel]
) -> None:
    """Every pooled connection asks the Sentinels on connect, so discoveries overlap (a pool's
    warm-up, a burst after a failover). Here the first Sentinel listed is down: each discovery
    moves on to the next, and the one that answers is moved to the front. redis-py's own
    `Sentinel` does that by a stale index and loses a Sentinel from its list for good (its
    sockets then leaked, never closed); ours keeps all of them. If the stock case starts
    passing, redis-py fixed it and `Sentinels` can go."""
    with socket.socket() as down:  # bound, not listening: connecting is refused
        down.bind(("127.0.0.1", 0))
        first = f"127.0.0.1:{down.getsockname()[1]}"
        settings = sentinel_settings(
            healthy, "message-history", redis_sentinels=f"{first},{healthy.addresses}"
        )
        service = build_async_client(settings)  # does no I/O
        assert isinstance(service, aredis.Redis)
        assert isinstance(service.connection_pool, PacedSentinelPool)
        ours = service.connection_pool.sentinel_manager
        assert isinstance(ours, Sentinels)  # what the service asks
        ports = [s.connection_pool.connection_kwargs["port"] for s in ours.sentinels]
        sentinels = (
            ours
            if sentinel_class is Sentinels
            else sentinel_class(  # asking as the service does, stock
                [("127.0.0.1", port) for port in ports], sentinel_kwargs=ours.sentinel_kwargs
            )
        )
        try:
            found = await asyncio.gather(
                *(sentinels.discover_master(healthy.master) for _ in range(8))
            )
            listed = [s.connection_pool.connection_kwargs["port"] for s in sentinels.sentinels]
        finally:
            for sentinel_client in {*ours.sentinels, *sentinels.sentinels}:
                await sentinel_client.aclose()
            await service.aclose()
    assert {port for _, port in found} == {healthy.primary().port}
    if sentinel_class is aredis.Sentinel:
        assert sorted(listed) != sorted(ports), "redis-py keeps its Sentinels now"
    else:
        assert sorted(listed) == sorted(ports)
        assert listed[0] != ports[0]  # the one that answered is asked first next time


@pytest.mark.parametrize(("api", "per_turn"), [("message-history", 2), ("checkpointer", 4)])
async def test_wait_replicas_adds_no_round_trip(
    healthy: LocalSentinel, count_round_trips: list[int], api: str, per_turn: int
) -> None:
    primary = healthy.primary()
    server = primary.client()
    for wait in (0, 2):
        settings = make_settings(
            "redis", primary.url, history_api=api, redis_password=PASSWORD,
            redis_wait_replicas=wait, redis_socket_timeout_seconds=5.0,
            redis_wait_timeout_seconds=4.0,  # a loaded machine's replicas may lag: not tested here
        )  # fmt: skip
        async with app_client(settings) as client:
            assert (await turn(client, "warm", "hi")).status_code == 200
            count_round_trips[0] = 0
            before = commandstats(server)
            for _ in range(5):
                assert (await turn(client, f"w{wait}", "again")).status_code == 200
            after = commandstats(server)
        assert count_round_trips[0] == 5 * per_turn
        waits = after.get("wait", 0) - before.get("wait", 0)
        assert waits == (5 if wait else 0)
    server.close()


async def test_too_few_replicas_is_a_503_and_the_write_stays_on_the_primary(
    healthy: LocalSentinel, history_api: str
) -> None:
    """WAIT 3 with 2 replicas: the turn is refused as unconfirmed. It is not undone (Redis has
    no rollback): the primary keeps it, as docs/runbook.md says."""
    settings = sentinel_settings(
        healthy, history_api, redis_wait_replicas=3, redis_wait_timeout_seconds=0.2
    )
    async with app_client(settings) as client:
        await wait_ready(client)
        started = time.monotonic()
        r = await turn(client, "w", "unconfirmed")
        assert time.monotonic() - started < 2
        assert r.status_code == 503
        message = r.json()["error"]["message"]
        assert message.startswith("history store unavailable: redis: WAIT: 2 of 3 replicas")
        assert "may still be kept" in message
        assert "unconfirmed" in await messages(client, "w")


async def test_wait_1_loses_a_turn_when_the_one_replica_with_it_cannot_be_promoted(
    healthy: LocalSentinel,
) -> None:
    """What `WAIT 1` does not promise, shown step by step. With replica B down, turn "held by
    A" is acknowledged by `WAIT 1` (A has it) while `WAIT 2` refuses it. Then A hangs (SIGSTOP:
    a stalled or unreachable replica), the primary dies and B comes back: the Sentinels promote
    B, the only replica that answers, and A comes back as B's replica. The acknowledged turn is
    gone. Under heavy load "hangs" is "answers too late": a Sentinel picks the replica to
    promote from the offsets it last read and skips one slow to answer. Only `WAIT` = every
    replica makes any promotable replica hold every acknowledged turn (docs/runbook.md)."""
    primary = healthy.primary()
    a, b = (node for node in healthy.nodes if node is not primary)
    one = sentinel_settings(
        healthy, "message-history", redis_wait_replicas=1, redis_wait_timeout_seconds=0.3
    )
    every = sentinel_settings(
        healthy, "message-history", redis_wait_replicas=2, redis_wait_timeout_seconds=0.3
    )
    b.kill()
    async with app_client(one) as client:
        assert (await turn(client, "w1", "held by A")).status_code == 200
    async with app_client(every) as client:
        r = await turn(client, "w2", "refused")
        assert r.status_code == 503
        assert "1 of 2 replicas" in r.json()["error"]["message"]

    a.process.send(signal.SIGSTOP)
    try:
        wait_until(lambda: healthy.seen_down_by_all(a), timeout_s=30.0,
                   what="every Sentinel to see replica A down")  # fmt: skip
        primary.kill()
        healthy.start_as_replica_of(b, primary)  # as a restarted pod: its old primary, dead
        assert healthy.wait_failover(primary, timeout_s=60.0) is b
    finally:
        a.kill()  # A is restarted as B's replica below: the turn goes with its resync
    healthy.restart_as_replica(a)
    healthy.restart_as_replica(primary)
    healthy.wait_settled()
    async with app_client(one) as client:
        await wait_ready(client)
        gone = await client.get("/v1/sessions/w1/messages")  # acknowledged with WAIT 1
        assert gone.status_code == 404, gone.text
    with a.client() as replica_a:
        assert replica_a.dbsize() == 0  # A's copy went with its resync from B


def test_sentinel_settings_are_checked_at_startup() -> None:
    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER"):
        make_settings("redis", redis_mode="sentinel", redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ValueError, match="REDIS_SENTINELS"):
        make_settings("redis", redis_mode="sentinel", redis_sentinel_master="m")
    with pytest.raises(ValueError, match="'nohost' is not host:port"):
        make_settings(
            "redis", redis_mode="sentinel", redis_sentinel_master="m", redis_sentinels="nohost"
        )
    with pytest.raises(ValueError, match="REDIS_WAIT_TIMEOUT_SECONDS"):
        make_settings("redis", redis_wait_replicas=1, redis_wait_timeout_seconds=1.0)
    ok = make_settings(
        "redis", redis_mode="sentinel", redis_sentinel_master="m",
        redis_sentinels="a:26379, [::1]:26380",
    )  # fmt: skip
    assert ok.sentinel_addresses == [("a", 26379), ("::1", 26380)]


async def test_wait_survives_a_script_cache_flush_and_works_from_sync_code(
    healthy: LocalSentinel,
) -> None:
    """A failed-over primary has no scripts cached: the checkpointer's EVALSHA + WAIT falls back
    to EVAL + WAIT. The lift-and-use RedisChatHistory waits from sync code too."""
    primary = healthy.primary()
    settings = make_settings(
        "redis", primary.url, history_api="checkpointer", redis_password=PASSWORD,
        redis_wait_replicas=2,
    )  # fmt: skip
    async with app_client(settings) as client:
        assert (await turn(client, "f", "one")).status_code == 200
        with primary.client() as c:
            c.script_flush()
        assert (await turn(client, "f", "two")).status_code == 200
        assert (await messages(client, "f"))[::2] == ["one", "two"]

    url = primary.url.replace("redis://", f"redis://:{PASSWORD}@")
    history = RedisChatHistory.from_url("sync", url, wait_replicas=2)
    assert history.append_turn([HumanMessage("hi"), AIMessage("hello")]) == 0
    too_many = RedisChatHistory.from_url("sync", url, wait_replicas=3, wait_timeout_seconds=0.1)
    with pytest.raises(ReplicasBehind, match="2 of 3 replicas"):
        too_many.append_turn([HumanMessage("again"), AIMessage("kept on the primary")])
    assert len(history.messages) == 4  # not undone
    history.close()
    too_many.close()


async def test_with_wait_a_primary_without_the_script_gets_its_source_once(
    healthy: LocalSentinel, count_round_trips: list[int]
) -> None:
    """A failed-over primary has no scripts: EVALSHA + WAIT answer NOSCRIPT, EVAL + WAIT follow
    (one more round trip, WAIT still on the write's connection), then EVALSHA again."""
    primary = healthy.primary()
    server = primary.client()
    client = aredis.Redis.from_url(primary.url, password=PASSWORD)
    history = RedisChatHistory(
        "noscript", async_client=client, wait_replicas=2, wait_timeout_seconds=2
    )
    await client.ping()  # connected: the handshake is not a round trip of the append
    server.script_flush()
    count_round_trips[0] = 0
    before = commandstats(server)
    assert await history.aappend_turn([HumanMessage(content="a"), AIMessage(content="b")]) == 0
    assert await history.aappend_turn([HumanMessage(content="c"), AIMessage(content="d")]) == 2
    after = commandstats(server)
    assert count_round_trips[0] == 3
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in ("evalsha", "eval", "wait")}
    assert calls == {"evalsha": 2, "eval": 1, "wait": 3}
    assert [m.text for m in await history.aget_window(0)] == ["a", "b", "c", "d"]
    await client.aclose()
    server.close()


async def test_an_added_replica_is_found_by_the_sentinels_and_counts_for_wait(
    healthy: LocalSentinel,
) -> None:
    """The runbook's "add a replica": a new data node started as a replica of the primary the
    Sentinels name is listed by every Sentinel (so it can be promoted) and confirms turns: with
    3 replicas, `WAIT 3` acknowledges. Runs last: it leaves the set with a removed node."""
    settings = sentinel_settings(
        healthy, "message-history", redis_wait_replicas=3, redis_wait_timeout_seconds=0.5
    )
    async with app_client(settings) as client:
        await wait_ready(client)
        assert (await turn(client, "r", "two replicas only")).status_code == 503
        added = healthy.add_replica()
        try:
            r = await turn(client, "r", "three replicas")
            assert r.status_code == 200, r.text
            with added.client() as replica:
                stored = replica.lrange("chat-history:r", 0, -1)
            assert any(b"three replicas" in item for item in stored)
        finally:
            added.stop()
            healthy.nodes.remove(added)
