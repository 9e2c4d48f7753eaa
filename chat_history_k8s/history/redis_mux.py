"""The chat turn's own Redis connection: one socket per process, every task's commands pipelined
on it, replies matched to their senders in order (Redis answers each connection in order).

Why: through redis-py's pool a turn's two round trips cost the replica client CPU for a
checkout, packing, a timeout per command, parsing through its layers and a check-in, and each
waits for a wake-up of its own. Here a command is packed (hiredis), queued and parked on a
future; the round trips of one loop iteration go out in one write, and replies are parsed by
hiredis as they arrive, several turns' replies often in one read. One turn at a time it halves
the client CPU of redis-py's path (docs/benchmarks-clients.md); under concurrency it also saves
sends, reads and Redis wake-ups (docs/benchmarks.md measures the service both ways).

What it keeps from redis-py's client, on purpose:
- every reply is waited for at most `socket_timeout` seconds, counted from the write that sent
  its command (not from the call: time the event loop spends on other work before that write,
  a stall or a starved CPU, is not Redis's). A reply that is late means the socket's state is
  unknown: the connection is dropped, every command on it fails (`redis.TimeoutError`), the
  next command opens a new one. A timeout is never retried (the write may have been applied).
- connecting is paced (one connect at a time, every caller waits for the same one), bounded
  by `connect_timeout`, and retried `retries` times with exponential backoff, like redis-py's
  `Retry` for connection errors (a connect that timed out too: nothing was sent on it). A
  command whose connection was lost *after* it was written is retried only when it is
  `idempotent` (a read): a write may have been applied.
- the address is asked for on every connect: in Sentinel mode the Sentinels name the primary
  (the same lookup as the pool's connections), so after a failover the next connect reaches
  the new primary. A `READONLY` reply (a demoted primary) drops the connection for that reason.
- error replies are redis-py's exception classes (`NOSCRIPT` is `NoScriptError`, ...),
  returned in their command's place, not raised: the caller decides.

Used for the turn's window read and its append (without `WAIT`: `WAIT` blocks its connection
until replicas answer, which would hold every other turn behind it). Everything else (`WAIT`
appends, transcripts, deletes, the checkpointer, a Redis Cluster, TLS or a Unix socket) takes
redis-py's pool.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
import redis
from redis._parsers.base import BaseParser
from redis.exceptions import InvalidResponse, ReadOnlyError

Address = Callable[[], Awaitable[tuple[str, int]]]
Command = Sequence[str | bytes | int | float]


def pack(commands: Sequence[Command]) -> bytes:
    """Commands in RESP (arrays of bulk strings), back to back; hiredis packs (in C), and
    refuses an argument that is not bytes, str, int or float with a TypeError."""
    # The ignore: hiredis's stub types its argument as a 1-tuple.
    return b"".join([hiredis.pack_command(tuple(command)) for command in commands])  # type: ignore[arg-type]  # see above


class ConnectTimeout(redis.ConnectionError):
    """A connect that got no answer within the connect timeout (its SYN dropped: an address
    whose pod is gone, a Service or NetworkPolicy rule not programmed yet, a full accept
    queue). Nothing was sent on it, so unlike a command that timed out it is retried like a
    refused connect; redis-py raises its `TimeoutError` there and never retries it."""


class _Batch:
    """One `execute()`: its replies, collected in order, the future that gets them, and when
    they are late (set when its commands are written)."""

    __slots__ = ("deadline", "expected", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int) -> None:
        self.future = future
        self.expected = expected
        self.deadline: float | None = None
        self.replies: list[Any] = []


class _Wire(asyncio.Protocol):
    """One socket's events, handed to its connection (which ignores a socket it replaced)."""

    def __init__(self, owner: MultiplexedConnection) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_error)
        self.batches: collections.deque[_Batch] = collections.deque()
        self.outgoing: list[bytes] = []  # round trips queued in this loop iteration
        self.unsent: list[_Batch] = []  # their batches, waiting for that write
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self.owner._drop(self, redis.ConnectionError(f"Connection closed by the server{detail}"))


def _error(message: str) -> redis.RedisError:
    error: redis.RedisError = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]  # untyped in redis-py
    return error


class MultiplexedConnection:
    """One connection to the Redis node `address()` names, shared by every task."""

    def __init__(
        self,
        address: Address,
        *,
        socket_timeout: float,
        connect_timeout: float,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        retries: int = 0,
        backoff_seconds: float = 0.05,
        backoff_cap_seconds: float = 1.0,
    ) -> None:
        self._address = address
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._handshake: list[Command] = []
        if password is not None:
            auth: Command = ("AUTH", password) if username is None else ("AUTH", username, password)
            self._handshake.append(auth)
        if db:
            self._handshake.append(("SELECT", db))
        self._retries = retries
        self._backoff = backoff_seconds
        self._backoff_cap = backoff_cap_seconds
        self._wire: _Wire | None = None
        self._connecting: asyncio.Task[_Wire] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.where = "not connected yet"

    @property
    def connected(self) -> bool:
        return self._wire is not None

    async def execute(self, commands: Sequence[Command], *, idempotent: bool) -> list[Any]:
        """Send `commands` together (one write: one round trip) and return their replies in
        order, an error reply as its exception instance. Raises `redis.ConnectionError` or
        `redis.TimeoutError` when no reply came."""
        attempt = 0
        while True:
            written = False
            try:
                wire = self._wire or await self._connected()
                written = True
                return await self._submit(wire, commands)
            except redis.ConnectionError:
                if attempt >= self._retries or (written and not idempotent) or self._closed:
                    raise
            attempt += 1
            await asyncio.sleep(min(self._backoff_cap, self._backoff * 2 ** (attempt - 1)))

    async def aclose(self) -> None:
        """Close the socket; commands still waiting fail with `redis.ConnectionError`."""
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.wait([self._connecting])
        if self._wire is not None:
            self._drop(self._wire, redis.ConnectionError("the connection was closed"))

    # -- sending -----------------------------------------------------------------------------
    def _submit(self, wire: _Wire, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        batch = _Batch(future, len(commands))
        # First: a command that cannot be packed is not waited for. Its replies cannot arrive
        # before this callback returns: the bytes go out in a later one (`_flush`).
        self._write(wire, pack(commands), batch)
        wire.batches.append(batch)
        return future

    def _write(self, wire: _Wire, data: bytes, batch: _Batch) -> None:
        """The one place a round trip's bytes go out (one call each). They are queued and sent
        with every other round trip of this loop iteration in one write: under load, the turns
        that a loop iteration runs share one `send` (and Redis one wake-up), as their replies
        often share one read."""
        if not wire.outgoing:
            asyncio.get_running_loop().call_soon(self._flush, wire)
        wire.outgoing.append(data)
        wire.unsent.append(batch)

    def _flush(self, wire: _Wire) -> None:
        data = b"".join(wire.outgoing)
        wire.outgoing.clear()
        # Their replies are late `socket_timeout` seconds from now, when Redis gets them: a busy
        # loop may run this callback well after the calls that queued them.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._socket_timeout
        for batch in wire.unsent:
            batch.deadline = deadline
        wire.unsent.clear()
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        # A socket the server is closing fails its batches when it is lost: nothing to send.
        if not wire.closed and wire.transport is not None and not wire.transport.is_closing():
            wire.transport.write(data)

    def _check_deadline(self) -> None:
        """The oldest unanswered batch's deadline passed: drop the connection; otherwise wait
        for the new oldest one's."""
        self._timer = None
        wire = self._wire
        if wire is None or not wire.batches:
            return
        loop = asyncio.get_running_loop()
        oldest = wire.batches[0]
        if oldest.deadline is None:  # none sent yet (older ones answered): its write arms this
            return
        if oldest.deadline <= loop.time():
            self._drop(wire, redis.TimeoutError(f"Timeout reading from {self.where}"))
        else:
            self._timer = loop.call_at(oldest.deadline, self._check_deadline)

    # -- receiving ---------------------------------------------------------------------------
    def _received(self, wire: _Wire, data: bytes) -> None:
        if wire.closed:
            return
        wire.reader.feed(data)
        demoted = False
        while True:
            try:
                reply = wire.reader.gets()
            except InvalidResponse as exc:
                self._drop(wire, exc)
                return
            if reply is False:
                break
            if not wire.batches:
                self._drop(wire, InvalidResponse(f"a reply nobody asked for from {self.where}"))
                return
            if isinstance(reply, ReadOnlyError):
                # A demoted primary: reconnect, which asks for the address again.
                demoted = True
                reply = redis.ConnectionError(f"{self.where} is a replica now (READONLY)")
            batch = wire.batches[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                wire.batches.popleft()
                if not batch.future.done():  # its caller may have been cancelled
                    batch.future.set_result(batch.replies)
        if demoted:
            self._drop(wire, redis.ConnectionError(f"{self.where} is a replica now (READONLY)"))

    def _drop(self, wire: _Wire, error: redis.RedisError) -> None:
        """Close `wire` and fail every batch still waiting on it with `error`."""
        if wire.closed:
            return
        wire.closed = True
        if self._wire is wire:
            self._wire = None
        if wire.transport is not None:
            wire.transport.abort()
        while wire.batches:
            batch = wire.batches.popleft()
            if not batch.future.done():
                batch.future.set_exception(error)

    # -- connecting --------------------------------------------------------------------------
    async def _connected(self) -> _Wire:
        if self._wire is not None:
            return self._wire
        if self._closed:
            raise redis.ConnectionError("the connection was closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            # Retrieved here so a connect nobody waits for any more logs nothing.
            self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
        # Shielded: a caller that gives up does not cancel the connect the others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Wire:
        host, port = await self._address()
        self.where = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, wire = await loop.create_connection(lambda: _Wire(self), host, port)
        except TimeoutError as exc:
            raise ConnectTimeout(f"Timeout connecting to {self.where}") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"Error connecting to {self.where}: {exc}") from exc
        if self._handshake:
            try:
                # Not the connection's yet, so not under its deadline timer: a timeout of its own.
                async with asyncio.timeout(self._socket_timeout):
                    replies = await self._submit(wire, self._handshake)
            except TimeoutError as exc:
                self._drop(wire, redis.TimeoutError(f"Timeout reading from {self.where}"))
                raise redis.TimeoutError(f"Timeout reading from {self.where}") from exc
            except redis.RedisError:
                self._drop(wire, redis.ConnectionError("handshake failed"))
                raise
            for reply in replies:
                if isinstance(reply, redis.RedisError):
                    self._drop(wire, redis.ConnectionError("handshake failed"))
                    if isinstance(reply, redis.ConnectionError):  # e.g. AuthenticationError
                        raise reply
                    raise redis.ConnectionError(f"{self.where}: {reply}") from reply
        if self._closed:
            self._drop(wire, redis.ConnectionError("the connection was closed"))
            raise redis.ConnectionError("the connection was closed")
        self._wire = wire
        return wire
