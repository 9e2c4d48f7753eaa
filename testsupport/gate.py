"""A loopback port whose connects go unanswered until it is opened, then reach a real server:
what a client meets when its SYNs are dropped (an address whose pod is gone, a Service or a
NetworkPolicy rule not programmed yet) and then are not."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from testsupport.procs import LOOPBACK

# Connections that fill a listener's accept queue (listen(0) holds one; more to be sure): while
# it is full and nobody accepts, the kernel drops every new SYN, so a connect gets no answer.
_FILLERS = 3


class DroppingGate:
    """A listening port on 127.0.0.1 whose accept queue is full: a connect to it times out.
    `open()` (inside a running event loop) empties the queue and relays every later connection
    to `127.0.0.1:target_port`, byte for byte, in both directions.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers = []
        for _ in range(_FILLERS):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((LOOPBACK, self.port))
            self._fillers.append(filler)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self.relayed = 0  # connections relayed since open()

    async def open(self) -> None:
        """Answer connects from now on: drop the queued fillers, relay what comes next."""
        self._listener.setblocking(False)
        while True:
            try:
                queued, _ = self._listener.accept()
            except BlockingIOError:
                break
            queued.close()
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        self._server = await asyncio.start_server(self._relay, sock=self._listener)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        self.relayed += 1
        writers = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
            writers.append(up_writer)
            async with asyncio.TaskGroup() as pumps:  # until one side closes (or aclose)
                down = pumps.create_task(_pump(reader, up_writer))
                up = pumps.create_task(_pump(up_reader, writer))
                await asyncio.wait([down, up], return_when=asyncio.FIRST_COMPLETED)
                down.cancel()
                up.cancel()
        finally:
            for w in writers:
                w.close()
            self._relays.discard(task)

    async def aclose(self) -> None:
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for filler in self._fillers:
            filler.close()
        self._listener.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()
