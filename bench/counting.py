"""Count what a Redis client really does, independently of the code under test.

Two witnesses that do not trust the class being measured:

- client side, a redis-py `Connection` subclass (sync or asyncio) that counts
  `send_packed_command` calls (one per round trip: a pipeline sends all its commands in one
  call, then reads the replies) and the bytes that cross its socket;
- server side, `INFO commandstats` before and after (what Redis itself executed).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis


@dataclass
class WireStats:
    round_trips: int = 0
    bytes_sent: int = 0
    bytes_read: int = 0

    def snapshot(self) -> WireStats:
        return WireStats(self.round_trips, self.bytes_sent, self.bytes_read)

    def minus(self, earlier: WireStats) -> WireStats:
        return WireStats(
            self.round_trips - earlier.round_trips,
            self.bytes_sent - earlier.bytes_sent,
            self.bytes_read - earlier.bytes_read,
        )


class _CountingSocket:
    """A socket proxy that counts the bytes sent and received; everything else is delegated."""

    def __init__(self, sock: socket.socket, stats: WireStats) -> None:
        self._sock = sock
        self._stats = stats

    def sendall(self, data: Any, *args: Any) -> None:
        self._stats.bytes_sent += len(memoryview(data).cast("B"))
        self._sock.sendall(data, *args)

    def send(self, data: Any, *args: Any) -> int:
        sent = self._sock.send(data, *args)
        self._stats.bytes_sent += sent
        return sent

    def recv_into(self, buffer: Any, *args: Any) -> int:
        got = self._sock.recv_into(buffer, *args)
        self._stats.bytes_read += got
        return got

    def recv(self, size: int, *args: Any) -> bytes:
        data = self._sock.recv(size, *args)
        self._stats.bytes_read += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def counting_connection_class(stats: WireStats) -> type[redis.Connection]:
    """A `redis.Connection` class that records into `stats`."""

    class CountingConnection(redis.Connection):
        def _connect(self) -> Any:
            return _CountingSocket(super()._connect(), stats)  # type: ignore[no-untyped-call]  # unannotated in redis-py

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            stats.round_trips += 1
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]  # unannotated in redis-py

    return CountingConnection


def counted(client: redis.Redis, stats: WireStats) -> redis.Redis:
    """Make `client`'s pool open counting connections (call before its first command)."""
    pool = client.connection_pool
    pool.disconnect()
    pool.connection_class = counting_connection_class(stats)
    return client


class _CountingStreamReader:
    """An asyncio StreamReader proxy that counts the bytes the parser reads from it."""

    def __init__(self, reader: asyncio.StreamReader, stats: WireStats) -> None:
        self._reader = reader
        self._stats = stats

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self._stats.bytes_read += len(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await self._reader.readexactly(n)
        self._stats.bytes_read += len(data)
        return data

    async def readline(self) -> bytes:
        data = await self._reader.readline()
        self._stats.bytes_read += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def async_counting_connection_class(stats: WireStats) -> type[aredis.Connection]:
    """A `redis.asyncio.Connection` class that records into `stats`: a round trip and the bytes
    of each `send_packed_command`, and what the reply parser reads."""

    class CountingConnection(aredis.Connection):
        async def _connect(self) -> None:
            await super()._connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            # The reply parser takes the reader after this (on_connect): it reads through us.
            self._reader = _CountingStreamReader(self._reader, stats)  # type: ignore[arg-type,assignment]  # a proxy with the reader's interface

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            stats.round_trips += 1
            if isinstance(command, str):
                command = command.encode()
            chunks: list[bytes] = [command] if isinstance(command, bytes) else list(command)
            stats.bytes_sent += sum(len(c) for c in chunks)
            await super().send_packed_command(chunks, check_health)

    return CountingConnection


def acounted(client: aredis.Redis, stats: WireStats) -> aredis.Redis:
    """Make an asyncio `client`'s pool open counting connections (before its first command)."""
    client.connection_pool.connection_class = async_counting_connection_class(stats)
    return client


def command_calls(admin: redis.Redis) -> dict[str, int]:
    """Calls per command as the server counted them (`INFO commandstats`), INFO itself left out."""
    stats: dict[str, Any] = admin.info("commandstats")
    calls = {}
    for name, fields in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in ("info",):
            calls[command] = int(fields["calls"])
    return calls


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after[name] - before.get(name, 0) for name in after}
    return {name: n for name, n in sorted(delta.items()) if n}
