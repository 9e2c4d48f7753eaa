"""The turn's multiplexed Redis connection against a real redis-server: many tasks' commands on
one socket, each gets its own replies; a lost, slow or demoted server fails the commands waiting
on it (never hands one task another's reply) and the next command reconnects."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis
import uvloop
from redis.exceptions import AuthenticationError, NoScriptError

from chat_history_k8s.history.redis_mux import MultiplexedConnection, pack
from testsupport import LOOPBACK, RedisServer, free_port
from testsupport.gate import DroppingGate

TIMEOUT_S = 0.5


def fixed(port: int) -> Callable[[], Awaitable[tuple[str, int]]]:
    async def address() -> tuple[str, int]:
        return (LOOPBACK, port)

    return address


@pytest.fixture
async def mux(own_redis: RedisServer) -> AsyncIterator[MultiplexedConnection]:
    connection = MultiplexedConnection(
        fixed(own_redis.port), socket_timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S
    )
    yield connection
    await connection.aclose()


async def one(mux: MultiplexedConnection, *command: str | bytes | int) -> object:
    (reply,) = await mux.execute([command], idempotent=True)
    return reply


def test_commands_are_packed_as_resp_arrays_of_bulk_strings() -> None:
    assert pack([("SET", "k", b"v\r\n", 7), ("GET", "k")]) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n7\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    )
    with pytest.raises(TypeError, match="str, int, float or bytes"):
        pack([("SET", "k", None)])  # type: ignore[list-item]  # what the check is for


async def test_many_tasks_on_one_socket_each_get_their_own_replies(
    mux: MultiplexedConnection, own_redis: RedisServer
) -> None:
    async def task(i: int) -> list[object]:
        return await mux.execute(
            [("RPUSH", f"k{i}", f"v{i}"), ("LRANGE", f"k{i}", 0, -1)], idempotent=False
        )

    replies = await asyncio.gather(*(task(i) for i in range(300)))
    assert replies == [[1, [f"v{i}".encode()]] for i in range(300)]
    with own_redis.client() as client:
        assert int(client.info("clients")["connected_clients"]) == 2  # the mux and this one


async def test_an_error_reply_takes_its_commands_place_as_redis_pys_exception(
    mux: MultiplexedConnection,
) -> None:
    missing, wrong, fine = await mux.execute(
        [("EVALSHA", "0" * 40, 0), ("LRANGE", "k", "x", "y"), ("PING",)], idempotent=True
    )
    assert isinstance(missing, NoScriptError)
    assert isinstance(wrong, redis.ResponseError)
    assert fine == b"PONG"


async def test_a_killed_server_fails_the_waiting_commands_and_a_restart_is_reconnected(
    mux: MultiplexedConnection, own_redis: RedisServer
) -> None:
    assert await one(mux, "SET", "kept", "1") == b"OK"
    own_redis.process.send(
        signal.SIGSTOP
    )  # replies cannot come back: the command waits on the socket
    waiting = asyncio.ensure_future(one(mux, "GET", "kept"))
    await asyncio.sleep(0.1)
    own_redis.kill()
    with pytest.raises(redis.ConnectionError):
        await waiting
    own_redis.start()  # same port, AOF: the data is back
    assert await one(mux, "GET", "kept") == b"1"


async def test_a_late_reply_times_out_and_is_never_handed_to_the_next_command(
    mux: MultiplexedConnection, own_redis: RedisServer
) -> None:
    assert await one(mux, "SET", "a", "reply-for-a") == b"OK"
    assert await one(mux, "SET", "b", "reply-for-b") == b"OK"
    own_redis.process.send(signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        await one(mux, "GET", "a")
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 1
    own_redis.process.send(signal.SIGCONT)  # GET a's reply is on its way now, to the dropped socket
    assert await one(mux, "GET", "b") == b"reply-for-b"


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_a_reply_is_waited_for_from_the_write_that_sent_its_command_not_from_the_call(
    own_redis: RedisServer, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """The event loop held up (a long callback, a starved CPU) between the call and the write
    that sends its command: that time is not Redis's, and Redis then answers in time."""

    async def held_up_before_the_write() -> None:
        mux = MultiplexedConnection(
            fixed(own_redis.port), socket_timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S
        )
        try:
            assert await one(mux, "PING") == b"PONG"  # connected
            # Queued before the call: it runs before the callback that writes the command.
            asyncio.get_running_loop().call_soon(time.sleep, 2 * TIMEOUT_S)
            started = time.monotonic()
            assert await one(mux, "SET", "k", "v") == b"OK"
            assert time.monotonic() - started >= 2 * TIMEOUT_S  # the hold-up came in between
        finally:
            await mux.aclose()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(held_up_before_the_write())


async def test_a_write_lost_after_it_was_sent_is_not_retried_a_read_is(
    own_redis: RedisServer,
) -> None:
    mux = MultiplexedConnection(
        fixed(own_redis.port), socket_timeout=5, connect_timeout=TIMEOUT_S, retries=3
    )
    try:
        assert await one(mux, "PING") == b"PONG"
        # The write is sent, then the server goes: the write may have been applied.
        own_redis.process.send(signal.SIGSTOP)
        write = asyncio.ensure_future(mux.execute([("INCR", "n")], idempotent=False))
        read = asyncio.ensure_future(mux.execute([("GET", "n")], idempotent=True))
        await asyncio.sleep(0.1)
        own_redis.kill()
        own_redis.start()
        with pytest.raises(redis.ConnectionError):
            await write
        assert await read == [None]  # retried on a new connection (AOF: the INCR never ran)
    finally:
        await mux.aclose()


async def test_connecting_is_retried_then_fails_with_a_connection_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    mux = MultiplexedConnection(
        fixed(port), socket_timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S, retries=2,
        backoff_seconds=0.05,
    )  # fmt: skip
    asked = 0
    original = mux._address

    async def counting() -> tuple[str, int]:
        nonlocal asked
        asked += 1
        return await original()

    mux._address = counting
    with pytest.raises(redis.ConnectionError, match=f"connecting to {LOOPBACK}:{port}"):
        await mux.execute([("PING",)], idempotent=False)  # nothing was sent: safe to retry
    assert asked == 3


async def test_a_password_is_sent_first_and_a_wrong_one_is_a_clear_error(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret")
    server.start()
    try:
        good = MultiplexedConnection(
            fixed(server.port), socket_timeout=1, connect_timeout=1, password="s3cret", db=2
        )
        assert await one(good, "SET", "k", "v") == b"OK"
        with server.client(db=2) as client:
            assert client.get("k") == b"v"  # SELECT ran too
        await good.aclose()
        bad = MultiplexedConnection(
            fixed(server.port), socket_timeout=1, connect_timeout=1, password="wrong"
        )
        with pytest.raises(AuthenticationError):
            await one(bad, "PING")
        await bad.aclose()
    finally:
        server.stop()


async def test_a_demoted_primary_drops_the_connection_and_the_next_asks_for_the_address(
    tmp_path: Path,
) -> None:
    primary, replica = RedisServer(tmp_path / "a"), RedisServer(tmp_path / "b")
    primary.start()
    replica.start()
    now = [primary.port]

    async def address() -> tuple[str, int]:
        return (LOOPBACK, now[0])

    mux = MultiplexedConnection(address, socket_timeout=1, connect_timeout=1)
    try:
        assert await one(mux, "SET", "k", "v") == b"OK"
        # A failover's effect on the old primary: it follows another server now.
        primary.cli("REPLICAOF", LOOPBACK, str(replica.port))
        now[0] = replica.port
        refused = await one(mux, "SET", "k", "w")
        assert isinstance(refused, redis.ConnectionError)
        assert "READONLY" in str(refused)
        assert not mux.connected
        assert await one(mux, "SET", "k", "w") == b"OK"  # reconnected, to the new address
        with replica.client() as client:
            assert client.get("k") == b"w"
    finally:
        await mux.aclose()
        primary.stop()
        replica.stop()


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(
    mux: MultiplexedConnection, own_redis: RedisServer
) -> None:
    for key in ("x", "y"):
        assert await one(mux, "SET", key, key) == b"OK"
    own_redis.process.send(signal.SIGSTOP)
    first = asyncio.ensure_future(one(mux, "GET", "x"))
    second = asyncio.ensure_future(one(mux, "GET", "y"))
    await asyncio.sleep(0.05)
    first.cancel()
    own_redis.process.send(signal.SIGCONT)
    assert await second == b"y"
    assert first.cancelled()


async def test_closing_fails_waiting_commands_and_refuses_new_ones(
    mux: MultiplexedConnection, own_redis: RedisServer
) -> None:
    assert await one(mux, "PING") == b"PONG"
    own_redis.process.send(signal.SIGSTOP)
    waiting = asyncio.ensure_future(one(mux, "PING"))
    await asyncio.sleep(0.05)
    await mux.aclose()
    own_redis.process.send(signal.SIGCONT)
    with pytest.raises(redis.ConnectionError, match="closed"):
        await waiting
    with pytest.raises(redis.ConnectionError, match="closed"):
        await one(mux, "PING")


@pytest.fixture
async def gate(own_redis: RedisServer) -> AsyncIterator[DroppingGate]:
    """A port in front of `own_redis` whose connects get no answer until it is opened."""
    dropping = DroppingGate(own_redis.port)
    yield dropping
    await dropping.aclose()


async def test_a_connect_that_got_no_answer_is_retried_even_for_a_write(
    own_redis: RedisServer, gate: DroppingGate
) -> None:
    # Nothing was sent on a connect that timed out: the write is sent once, on the retry's.
    asked = 0

    async def address() -> tuple[str, int]:  # asked on every connect
        nonlocal asked
        asked += 1
        if asked == 2:
            await gate.open()  # the first connect's SYN was dropped; the retry's gets through
        return (LOOPBACK, gate.port)

    connection = MultiplexedConnection(
        address, socket_timeout=TIMEOUT_S, connect_timeout=0.2, retries=1
    )
    try:
        assert await connection.execute([("RPUSH", "k", "v")], idempotent=False) == [1]
        assert (asked, gate.relayed) == (2, 1)
        with own_redis.client() as check:
            assert check.lrange("k", 0, -1) == [b"v"]
    finally:
        await connection.aclose()


async def test_connects_that_get_no_answer_fail_after_the_retries(gate: DroppingGate) -> None:
    connection = MultiplexedConnection(
        fixed(gate.port), socket_timeout=TIMEOUT_S, connect_timeout=0.2, retries=1
    )
    try:
        with pytest.raises(redis.ConnectionError, match="Timeout connecting to"):
            await one(connection, "PING")
        assert gate.relayed == 0
    finally:
        await connection.aclose()
