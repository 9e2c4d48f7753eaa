"""The sync history's two commands (`LRANGE`, `EVALSHA`/`EVAL`), each on a connection of the
client's own pool, with its retry policy, and without redis-py's per-command layers.

A command through redis-py's `execute_command` costs the client twice the CPU it needs, and most
of that is not the wire: observability hooks, argument filters, event dispatch, pool bookkeeping
(the window's LRANGE: 103 against 49 us, side by side, 15 interleaved rounds of 1,000). On a
connection of redis-py's own `ConnectionPool` (plain TCP or Unix socket, parsed by hiredis, no
health checks, no client-side cache: `direct_pool`), `execute` does only what a command needs:
it takes the connection off the pool under the pool's lock, checks that it is connected and
holds nothing unread but push messages (`_ready`), sends the command packed by hiredis, feeds the
reply to the connection's own hiredis reader (push messages handled as redis-py handles them),
and puts the connection back (docs/benchmarks.md measures it: "own commands"). Any other pool
(Sentinel, blocking, SSL) gets its connection through `get_connection` and sends with the
connection's own `send_command`/`read_response`, with the same check first.

Either way, a write whose connection failed once it was sent is not sent again: it may have been
applied (redis-py's retry sends it again, and a turn is stored twice). Reads, writes that were
not sent, and writes a demoted primary refused (READONLY, which a Sentinel connection turns into
a connection error) are retried as the client's `Retry` says.
"""

from __future__ import annotations

import select
import types
from typing import Any

import redis

# hiredis packs commands; redis-py's hiredis parser answers NOT_ENOUGH_DATA while a reply is partial
# (hiredis is a dependency: redis[hiredis]).
from hiredis import pack_command
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
from redis.connection import Connection, ConnectionPool, UnixDomainSocketConnection

from chat_history_k8s.history.redis_wait import Command

# redis-py's own `Redis.execute_command` as imported, or None when something had replaced or
# wrapped it already: a client whose class has another (a subclass, a tracing integration) keeps
# its own.
_STOCK_EXECUTE = (
    redis.Redis.execute_command
    if type(redis.Redis.execute_command) is types.FunctionType
    and redis.Redis.execute_command.__module__ == "redis.client"
    else None
)
_DIRECT_CONNECTIONS = (Connection, UnixDomainSocketConnection)


class _SentWriteFailed(Exception):
    """A write's connection failed once the write was sent: carried through redis-py's `Retry`
    (which retries connection errors) so that the write is not sent again."""

    def __init__(self, error: redis.RedisError) -> None:
        super().__init__(str(error))
        self.error = error


def direct_pool(pool: Any) -> bool:
    """Whether `execute` uses the connections of `pool` directly: redis-py's own
    `ConnectionPool` (not a subclass: Sentinel, blocking) of plain TCP or Unix socket
    connections (RESP2 or RESP3), parsed by hiredis, without health checks or a client-side
    cache."""
    if type(pool) is not ConnectionPool:
        return False
    kwargs = pool.connection_kwargs
    return (
        pool.connection_class in _DIRECT_CONNECTIONS
        and kwargs.get("parser_class", _HiredisParser) is _HiredisParser
        and not kwargs.get("health_check_interval")
        and getattr(pool, "cache", None) is None
    )


def execute(client: redis.Redis, args: Command, *, idempotent: bool) -> Any:
    """`client.execute_command(*args)` for a command that has no response callback (the
    history's LRANGE, EVALSHA and EVAL), on a connection of the client's pool with its retry
    policy (see the module). A client with a connection of its own (`single_connection_client`),
    a client-side cache, or an `execute_command` of its own (a subclass, a tracing integration
    that wraps it) goes through redis-py's `execute_command`."""
    pool = client.connection_pool
    if (
        client.connection is not None
        or getattr(pool, "cache", None) is not None
        or type(client).execute_command is not _STOCK_EXECUTE
    ):
        return client.execute_command(*args)  # type: ignore[no-untyped-call]  # untyped in redis-py
    direct = direct_pool(pool)
    conn = _checkout(pool) if direct else pool.get_connection()
    # (hiredis's stub declares a tuple of one argument)
    packed = pack_command(args) if direct else b""  # type: ignore[arg-type]

    def attempt() -> Any:
        # Connects a connection the last attempt dropped through `connect()`, which a Sentinel
        # connection overrides to ask the Sentinels for the primary: redis-py's `send_command`
        # would reconnect to the address it had (the demoted primary, again).
        _ready(conn)
        if direct:
            _send(conn, packed)
        else:
            conn.send_command(*args)
        read = _read if direct else _read_stock
        if idempotent:
            return read(conn)
        try:
            return read(conn)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            if isinstance(error.__context__, redis.ReadOnlyError):
                raise  # a demoted primary refused it (Sentinel's connection): sent again
            raise _SentWriteFailed(error) from error

    try:
        return conn.retry.call_with_retry(attempt, lambda _error: conn.disconnect())
    except redis.ResponseError:
        raise  # an error reply, read whole: the connection is fine
    except BaseException as error:
        # A reply may still be on its way (a Sentinel connection does not disconnect on a
        # failed read): never hand this connection to the next command.
        conn.disconnect()
        if isinstance(error, _SentWriteFailed):
            raise error.error from None
        raise
    finally:
        if direct:
            _checkin(pool, conn)
        else:
            pool.release(conn)


def _read_stock(conn: Any) -> Any:
    return conn.read_response()


def _ready(conn: Any) -> None:
    """Connected, with nothing unread but push messages, which are handled as redis-py handles
    them (maintenance notifications, invalidations). Anything else unread is a reply another
    command left (its caller gave up on it), or the server closed the connection (an idle
    timeout, a restart): the next command would take that reply for its own, or be sent into a
    dead socket (a sent write, never retried). Such a connection is replaced. redis-py 8.1's
    `get_connection` skips this check whenever the pool's maintenance notifications setting is
    "auto", its default, a truthy string (tests/history/test_redis_sync.py)."""
    sock = conn._sock
    if sock is None:
        conn.connect()
        return
    parser = conn._parser
    if type(parser) is not _HiredisParser:
        return  # (only without hiredis: redis-py's pure-Python parsers keep their own state)
    reader = parser._reader
    if reader is not None and not reader.has_data() and not _readable(sock):
        return
    if not _handled_pushes(parser):
        conn.disconnect()
        conn.connect()


def _readable(sock: Any) -> bool:
    pending = getattr(sock, "pending", None)  # TLS bytes decrypted above the socket
    if pending is not None and pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _handled_pushes(parser: Any) -> bool:
    """Read what a connection holds unread, without waiting: True when it was push messages
    only, each handed to the parser's push handlers; False for anything else (a reply, part of
    a message, the end of the stream), after which the connection must not be used."""
    sock, reader, buffer = parser._sock, parser._reader, parser._buffer
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    if sock is None or reader is None or push is None:
        return False
    try:
        while _readable(sock):
            size = sock.recv_into(buffer)  # readable: it does not wait
            if not size:
                return False
            reader.feed(buffer, 0, size)
        while (message := reader.gets()) is not NOT_ENOUGH_DATA:
            if not isinstance(message, push):
                return False
            parser.handle_push_response(message)
    except Exception:  # a connection in doubt is replaced, never used
        return False
    return not reader.has_data()


# -- a direct pool's connections -----------------------------------------------------------------
def _checkout(pool: Any) -> Any:
    """A connection off `pool`, as `get_connection` takes one (its lock, its lists), without its
    observability hooks; a new one through `get_connection` itself. `_ready` checks it."""
    pool._checkpid()  # a forked child gets a pool of its own, not its parent's sockets
    with pool._lock:
        try:
            conn = pool._available_connections.pop()
        except IndexError:
            conn = None
        else:
            pool._in_use_connections.add(conn)
    return pool.get_connection() if conn is None else conn


def _checkin(pool: Any, conn: Any) -> None:
    """`pool.release(conn)` for a connection of this process that nothing re-authenticates or
    reconnects (what redis-py's release does for those: its event, `should_reconnect`);
    `pool.release` itself otherwise."""
    if (
        conn.pid != pool.pid
        or getattr(conn, "_re_auth_token", None) is not None
        or conn.should_reconnect()
    ):
        pool.release(conn)
        return
    with pool._lock:
        try:
            pool._in_use_connections.remove(conn)
        except KeyError:
            return  # the pool was reset meanwhile: not its connection any more (as redis-py)
        pool._available_connections.append(conn)


def _send(conn: Any, packed: bytes) -> None:
    sock = conn._sock
    if sock is None:  # disconnected by another thread (the client closed)
        raise redis.ConnectionError("Connection closed by client.")
    try:
        sock.sendall(packed)
    except TimeoutError as error:  # socket.timeout
        raise redis.TimeoutError("Timeout writing to socket") from error
    except OSError as error:
        raise redis.ConnectionError(f"Error while writing to socket: {error}") from error


def _read(conn: Any) -> Any:
    """The reply, fed to the connection's own hiredis reader (so an error reply is redis-py's
    exception for it: NoScriptError, ReadOnlyError...), raised when it is an error. Push
    messages that come first are handed to the parser's handlers, as redis-py does."""
    parser = conn._parser
    sock, reader, buffer = parser._sock, parser._reader, parser._buffer
    if sock is None or reader is None:
        raise redis.ConnectionError("Connection closed by client.")
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    while True:
        reply = reader.gets()
        while reply is NOT_ENOUGH_DATA:
            try:
                size = sock.recv_into(buffer)
            except TimeoutError as error:  # socket.timeout
                raise redis.TimeoutError("Timeout reading from socket") from error
            except OSError as error:
                raise redis.ConnectionError(f"Error while reading from socket: {error}") from error
            if not size:
                raise redis.ConnectionError("Connection closed by server.")
            reader.feed(buffer, 0, size)
            reply = reader.gets()
        if push is None or not isinstance(reply, push):
            break
        parser.handle_push_response(reply)
    if isinstance(reply, (redis.ResponseError, redis.ConnectionError)):
        raise reply
    return reply
