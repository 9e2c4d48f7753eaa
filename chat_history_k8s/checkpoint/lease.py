"""One turn at a time per thread: leases with fencing (Redis) and an in-process twin.

Two requests on one thread (a double click, a retry, two tabs) would both read checkpoint N and
both write a successor: one turn silently vanishes. A turn therefore runs inside a lease:

    async with serializer.alease(thread_id) as lease:
        await agent.ainvoke(inputs, lease.config())

`RedisCheckpointSaver.alease` serializes across replicas; `LocalThreadLocks.alease` within one
process (for `InMemorySaver`, whose threads live in one process anyway). Both wait a bounded
time and then raise `ThreadBusy`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from langchain_core.runnables import RunnableConfig

from chat_history_k8s.history.base import HistoryUnavailable

# The configurable key that carries a lease's token to the saver's write scripts. Keys that
# start with "__" are kept out of checkpoint metadata and traces by LangGraph and LangChain.
LEASE_CONFIG_KEY = "__chat_history_lease__"

_FIRST_RETRY_S = 0.005
_MAX_RETRY_S = 0.05


class ThreadBusy(HistoryUnavailable):
    """Another turn held the thread for the whole wait; nothing was read or written. Retrying
    later is safe (the API may map it to 409 or 429 with Retry-After; as a `HistoryUnavailable`
    it is a 503 otherwise)."""


class LeaseLost(HistoryUnavailable):
    """A write was refused because its turn no longer holds the thread's lease (it expired, or
    another turn took the thread over, or the thread was deleted), or because it carried no
    lease while a turn held one. Nothing of that write was stored."""


@dataclass(frozen=True)
class ThreadLease:
    """The right to run one turn on `thread_id`. `token` is `<fence>:<nonce>` (empty for an
    in-process lock). `fence` increases with every lease taken on a thread that has data; on a
    thread with none it starts again from 1 once the last lease expired (there is nothing to
    protect, and the random nonce still tells any two leases apart)."""

    thread_id: str
    token: str = ""

    @property
    def fence(self) -> int:
        return int(self.token.split(":", 1)[0]) if self.token else 0

    @property
    def nonce(self) -> str:
        return self.token.split(":", 1)[1] if self.token else ""

    def config(self, config: RunnableConfig | None = None) -> RunnableConfig:
        """`config` (or a new one) aimed at this thread and carrying the lease, for
        `agent.invoke/ainvoke`: every checkpoint write of the turn is then fenced."""
        result = RunnableConfig(**(config or {}))  # a copy: the caller's config is not changed
        configurable = {**result.get("configurable", {}), "thread_id": self.thread_id}
        if self.token:
            configurable[LEASE_CONFIG_KEY] = self.token
        result["configurable"] = configurable
        return result


def _delays(wait_s: float) -> Iterator[float]:
    """Sleeps between attempts until `wait_s` is spent: exponential with jitter, capped short
    because a turn takes milliseconds (this is polling, not a FIFO queue)."""
    deadline = time.monotonic() + wait_s
    delay = _FIRST_RETRY_S
    while (left := deadline - time.monotonic()) > 0:
        yield min(left, delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, _MAX_RETRY_S)


def busy(thread_id: str, wait_s: float) -> ThreadBusy:
    return ThreadBusy(f"thread {thread_id!r} is busy with another turn (waited {wait_s:g}s)")


async def aacquire(
    thread_id: str, wait_s: float, attempt: Callable[[], Awaitable[str | None]]
) -> ThreadLease:
    """Call `attempt` (one round trip: a token or None) until it succeeds or `wait_s` passed."""
    token = await attempt()
    for delay in _delays(wait_s):
        if token is not None:
            break
        await asyncio.sleep(delay)
        token = await attempt()
    if token is None:
        raise busy(thread_id, wait_s)
    return ThreadLease(thread_id, token)


def acquire(thread_id: str, wait_s: float, attempt: Callable[[], str | None]) -> ThreadLease:
    """The sync twin of `aacquire`."""
    token = attempt()
    for delay in _delays(wait_s):
        if token is not None:
            break
        time.sleep(delay)
        token = attempt()
    if token is None:
        raise busy(thread_id, wait_s)
    return ThreadLease(thread_id, token)


@dataclass
class _Slot:
    lock: asyncio.Lock
    users: int = 0


class LocalThreadLocks:
    """Per-thread `asyncio.Lock`s for a checkpointer that lives in this process (`InMemorySaver`).

    Bounded: a thread's lock exists only while a turn holds or awaits it, at most
    `max_threads` threads at once (more raise `ThreadBusy`), and a turn waits at most
    `wait_seconds`. It serializes one event loop's turns, which is all an in-process saver can
    share; it does nothing across replicas (use the Redis saver's leases there).
    """

    def __init__(self, *, wait_seconds: float = 10.0, max_threads: int = 10_000) -> None:
        self.wait_seconds = wait_seconds
        self.max_threads = max_threads
        self._slots: dict[str, _Slot] = {}

    def __len__(self) -> int:
        """Threads with a turn running or waiting."""
        return len(self._slots)

    @asynccontextmanager
    async def alease(
        self, thread_id: str, *, wait_seconds: float | None = None
    ) -> AsyncIterator[ThreadLease]:
        wait_s = self.wait_seconds if wait_seconds is None else wait_seconds
        slot = self._slots.get(thread_id)
        if slot is None:
            if len(self._slots) >= self.max_threads:
                raise ThreadBusy(f"{len(self._slots)} threads have turns in flight: the limit")
            slot = self._slots[thread_id] = _Slot(asyncio.Lock())
        slot.users += 1
        try:
            try:
                async with asyncio.timeout(wait_s):
                    await slot.lock.acquire()
            except TimeoutError:
                raise busy(thread_id, wait_s) from None
            try:
                yield ThreadLease(thread_id)
            finally:
                slot.lock.release()
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[thread_id]
